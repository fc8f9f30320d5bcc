"""Targets: shared lists (the demo's G20), a campaign's own targets by hand and by CSV file
(all or nothing, row-by-row errors), and which targets a petition addresses."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import CampaignTarget, PetitionTarget, Target
from tests.organize.conftest import add_user, csrf_of, login, post

HEADER = "name,title,country,email,group\n"
GOOD = HEADER + ("Anna Example,Mayor of Lyon,FR,anna@lyon.example.org,Mayors\n"
                 "Ben Example,Mayor of Köln,DE,ben@koeln.example.org,Mayors\n")


def _targets(app) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(Target)) or 0)


def _upload(client, path: str, content: bytes, filename: str = "targets.csv"):
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_of(page.get_data(as_text=True)),
                                   "file": (io.BytesIO(content), filename)},
                       content_type="multipart/form-data")


@pytest.fixture
def owner(org_app, two_sides):
    client = org_app.test_client()
    login(client, two_sides[0].owner)
    return client


def test_csv_import_adds_the_campaigns_own_targets(org_app, two_sides, owner):
    a, b = two_sides
    response = _upload(owner, f"/organize/campaigns/{a.campaign_id}/targets/import",
                       ("\ufeff" + GOOD).encode("utf-8"))  # Excel's BOM is fine
    assert response.status_code == 303
    with org_app.app_context():
        rows = db.session.execute(select(Target.name, Target.country, Target.group_name, CampaignTarget.campaign_id)
                                  .join(CampaignTarget, CampaignTarget.target_id == Target.id)
                                  .where(Target.group_name == "Mayors").order_by(Target.name)).all()
    assert [tuple(r) for r in rows] == [("Anna Example", "FR", "Mayors", a.campaign_id),
                                        ("Ben Example", "DE", "Mayors", a.campaign_id)]
    # The list can be added to A's petition, and B's organizers do not see it.
    added = post(owner, f"/organize/petitions/{a.petition_id}/targets/group", {"group": "Mayors"})
    assert added.status_code == 303
    with org_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PetitionTarget)
                                 .where(PetitionTarget.petition_id == a.petition_id)) == 3
    other = org_app.test_client()
    login(other, b.owner)
    assert "Anna Example" not in other.get(f"/organize/campaigns/{b.campaign_id}/targets").get_data(as_text=True)
    assert "Mayors" not in other.get(f"/organize/petitions/{b.petition_id}/targets").get_data(as_text=True)


BAD_FILES = [
    ((HEADER + "Zoë Müller,Mayor,DE,zoe@example.org,X\n").encode("latin-1"), ["not UTF-8"]),
    (b"name,title,country,email\nA,B,DE,a@example.org\n", ["missing: group"]),
    (b"nom,titre\nA,B\n", ["missing: name, title, country, email, group"]),
    ((GOOD + "Carl,Mayor,DE,not-an-email,Mayors\n").encode(), ["Line 4: email"]),
    ((GOOD + "Dora,Mayor,XX,dora@example.org,Mayors\n").encode(), ["Line 4: country", "unknown country code"]),
    ((HEADER + "Eve,Mayor,ZZ,eve@example.org,M\nFay,,DE,bad@,M\nGus,Mayor,FR,gus@example.org,M\n").encode(),
     ["Line 2: country", "Line 3: title: required; email: Enter a valid email address"]),
    ((HEADER + "Hal,Mayor,DE,hal@example.org,M\nHal,Mayor,DE,hal@example.org,M\n").encode(),
     ["Line 3: email: the same target as on line 2"]),
    (HEADER.encode(), ["no targets"]),
    (b"", ["empty"]),
    ((HEADER + "Ivy\x00,Mayor,DE,ivy@example.org,M\n").encode(), ["not a text CSV"]),
    ((HEADER + "Jo\x07,Mayor,DE,jo@example.org,M\n").encode(), ["Line 2: name: remove the control characters"]),
]


def test_a_bad_csv_imports_nothing_and_lists_every_problem(org_app, two_sides, owner):
    a, _ = two_sides
    before = _targets(org_app)
    for content, messages in BAD_FILES:
        response = _upload(owner, f"/organize/campaigns/{a.campaign_id}/targets/import", content)
        html = response.get_data(as_text=True)
        assert response.status_code == 400, content
        assert "Nothing was imported" in html
        for message in messages:
            assert message in html, (content, message)
        assert _targets(org_app) == before


def test_import_onto_a_petition(org_app, two_sides, owner):
    a, _ = two_sides
    response = _upload(owner, f"/organize/petitions/{a.petition_id}/targets/import", GOOD.encode())
    assert response.status_code == 303
    page = owner.get(f"/organize/petitions/{a.petition_id}/targets").get_data(as_text=True)
    assert "Anna Example" in page and "Ben Example" in page


def test_add_a_target_by_hand_with_errors_next_to_the_fields(org_app, two_sides, owner):
    a, _ = two_sides
    path = f"/organize/campaigns/{a.campaign_id}/targets/new"
    before = _targets(org_app)
    page = owner.get(path).get_data(as_text=True)
    bad = owner.post(path, data={"csrf_token": csrf_of(page), "name": "Kim", "title": "Mayor",
                                 "country": "QQ", "email": "kim@", "group": ""})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "Unknown country code" in html and "Enter a valid email address" in html
    assert html.count('aria-invalid="true"') == 2
    assert _targets(org_app) == before
    good = owner.post(path, data={"csrf_token": csrf_of(page), "name": "Kim", "title": "President",
                                  "country": "eu", "email": "kim@example.org", "group": "Bodies"})
    assert good.status_code == 303
    with org_app.app_context():
        target = db.session.scalar(select(Target).where(Target.name == "Kim"))
        assert target.country == "EU"
        assert db.session.get(CampaignTarget, target.id).campaign_id == a.campaign_id


def test_shared_lists_are_picked_by_group_and_changed_by_admins_only(org_app, two_sides, owner):
    from campaign.services.demo import seed_demo

    a, _ = two_sides
    with org_app.app_context():
        seed_demo(db.session)
        db.session.commit()
        g20 = db.session.scalar(select(Target).where(Target.group_name == "G20", Target.country == "DE"))
        g20_id = g20.id
    picker = owner.get(f"/organize/petitions/{a.petition_id}/targets").get_data(as_text=True)
    assert "G20 (21)" in picker
    assert post(owner, f"/organize/petitions/{a.petition_id}/targets/group", {"group": "G20"}).status_code == 303
    with org_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PetitionTarget)
                                 .where(PetitionTarget.petition_id == a.petition_id)) == 22
    # Shared targets are read-only for organizers: as if they did not exist.
    assert owner.get(f"/organize/targets/{g20_id}/edit").status_code == 404
    assert post(owner, f"/organize/targets/{g20_id}/delete").status_code == 404
    add_user(org_app, "admin@example.com", admin=True)
    admin = org_app.test_client()
    login(admin, "admin@example.com")
    assert admin.get(f"/organize/targets/{g20_id}/edit").status_code == 200
    assert "Friedrich Merz" in admin.get("/organize/admin/targets").get_data(as_text=True)


def test_default_targets_and_removal(org_app, two_sides, owner):
    a, _ = two_sides
    url = f"/organize/petitions/{a.petition_id}/targets/{a.target_id}"
    assert post(owner, url + "/default", {"default": "1"}).status_code == 303
    with org_app.app_context():
        assert db.session.get(PetitionTarget, (a.petition_id, a.target_id)).is_default is True
    assert post(owner, url + "/remove").status_code == 303
    with org_app.app_context():
        assert db.session.get(PetitionTarget, (a.petition_id, a.target_id)) is None
        assert db.session.get(Target, a.target_id) is not None  # still the campaign's own
    assert post(owner, url + "/remove").status_code == 404
