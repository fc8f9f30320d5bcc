"""Who may do what: a table of role x action x status, and the IDOR sweep (R29): an organizer
of campaign A calls every organizer route, found from app.url_map, with campaign B's ids and
gets 404 for each, and nothing of B changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import AuditEvent, Membership, OfflineSignatures, Petition, Signature, Target
from campaign.services.counting import signature_count
from tests.organize.conftest import Side, add_user, csrf_of, login

# Every URL argument of an organizer route and the Side attribute that names B's object.
# A new route with an argument missing here fails test_every_organizer_route_is_in_the_sweep.
ARGUMENTS = {
    "campaign_id": "campaign_id", "petition_id": "petition_id", "target_id": "target_id",
    "signature_id": "confirmed_id", "entry_id": "offline_id", "invitation_id": "invitation_id",
    "user_id": "owner_id", "response_id": "extra",  # "extra": made by conftest.OBJECT_MAKERS
    "token_id": "extra", "webhook_id": "extra",
    "update_id": "extra", "export_id": "extra",
}


def _organize_rules(app):
    return sorted((r for r in app.url_map.iter_rules() if r.rule.startswith("/organize")),
                  key=lambda r: r.rule)


def _url(rule, side: Side) -> str:
    url = rule.rule
    for name in rule.arguments:
        value = side.extra[name] if ARGUMENTS[name] == "extra" else getattr(side, ARGUMENTS[name])
        url = url.replace(f"<int:{name}>", str(value))
    return url


def _snapshot(app, side: Side) -> dict:
    with app.app_context():
        session = db.session
        petitions = session.scalars(select(Petition).where(Petition.campaign_id == side.campaign_id)).all()
        return {
            "petitions": sorted((p.id, p.slug, p.title, p.status, p.body_markdown) for p in petitions),
            "signatures": sorted(session.execute(select(Signature.id, Signature.status)).all()),
            "count": signature_count(session, side.petition_id),
            "offline": session.scalar(select(func.count()).select_from(OfflineSignatures)),
            "targets": sorted(session.execute(select(Target.id, Target.name, Target.email)).all()),
            "members": sorted(session.execute(select(Membership.campaign_id, Membership.user_id,
                                                     Membership.role)).all()),
        }


def test_every_organizer_route_is_in_the_sweep(org_app):
    rules = _organize_rules(org_app)
    assert len(rules) >= 30
    unknown = {(r.rule, name) for r in rules for name in r.arguments if name not in ARGUMENTS}
    assert unknown == set(), "add the new URL arguments to ARGUMENTS"


@pytest.mark.parametrize("who", ["organizer", "owner"])
def test_an_organizer_gets_404_for_every_object_of_another_campaign(org_app, two_sides, who):
    a, b = two_sides
    client = org_app.test_client()
    assert login(client, getattr(a, who)).status_code == 302
    token = csrf_of(client.get(f"/organize/campaigns/{a.campaign_id}").get_data(as_text=True))
    before = _snapshot(org_app, b)
    checked = 0
    for rule in _organize_rules(org_app):
        if not rule.arguments and not rule.rule.startswith("/organize/admin"):
            continue  # no object in the URL: the campaign list, new campaign, preview
        url = _url(rule, b)
        for method in sorted(rule.methods & {"GET", "POST"}):
            data = {"csrf_token": token, "reason": "x", "count": "5", "note": "n", "email": "x@example.com",
                    "name": "Hijack", "title": "Hijack", "country": "DE", "group": "G", "status": "active",
                    "required": "1", "default": "1", "target": str(b.target_id), "campaign": str(a.campaign_id),
                    "body_markdown": "x", "goal": "5", "language": "en", "mailing_policy": "none",
                    "organization": "x", "slug": "hijacked"}
            response = client.open(url, method=method, data=data if method == "POST" else None)
            assert response.status_code == 404, (who, method, url, response.status_code)
            checked += 1
    assert checked >= 40
    assert _snapshot(org_app, b) == before


def test_mixing_own_and_foreign_ids_is_refused(org_app, two_sides):
    a, b = two_sides
    client = org_app.test_client()
    login(client, a.owner)
    token = csrf_of(client.get("/organize/").get_data(as_text=True))
    before = _snapshot(org_app, b)
    cases = [
        ("POST", f"/organize/petitions/{a.petition_id}/targets/add", {"target": str(b.target_id)}),
        ("POST", f"/organize/petitions/{a.petition_id}/targets/{b.target_id}/remove", {}),
        ("POST", f"/organize/petitions/{a.petition_id}/targets/{b.target_id}/default", {"default": "1"}),
        ("POST", f"/organize/campaigns/{a.campaign_id}/members/{b.owner_id}/remove", {}),
        ("POST", f"/organize/petitions/{a.petition_id}/targets/group", {"group": "City-of-b"}),
    ]
    for method, url, data in cases:
        response = client.open(url, method=method, data={"csrf_token": token, **data})
        assert response.status_code == 404, (url, response.status_code)
    # Duplicating into a campaign one is not in: refused, nothing copied there.
    page = client.get(f"/organize/petitions/{a.petition_id}/duplicate")
    response = client.post(f"/organize/petitions/{a.petition_id}/duplicate",
                           data={"csrf_token": csrf_of(page.get_data(as_text=True)), "campaign": str(b.campaign_id)})
    assert response.status_code in (200, 400, 404)  # A's owner is offered no other campaign at all
    assert _snapshot(org_app, b) == before
    # B's own target is not offered to A.
    picker = client.get(f"/organize/petitions/{a.petition_id}/targets").get_data(as_text=True)
    assert "Target b" not in picker and "Target a" in picker


# role x action x expected status, on campaign A. "outsider" is an active account in no campaign.
MATRIX = [
    ("anonymous", "GET", "/organize/", 302),
    ("anonymous", "GET", "/organize/campaigns/{campaign_id}", 302),
    ("anonymous", "GET", "/organize/petitions/{petition_id}/signatures", 302),
    ("outsider", "GET", "/organize/", 200),
    ("outsider", "GET", "/organize/campaigns/{campaign_id}", 404),
    ("outsider", "GET", "/organize/petitions/{petition_id}", 404),
    ("outsider", "GET", "/organize/petitions/{petition_id}/signatures", 404),
    ("outsider", "GET", "/organize/campaigns/{campaign_id}/audit", 404),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}", 200),
    ("organizer", "GET", "/organize/petitions/{petition_id}", 200),
    ("organizer", "GET", "/organize/petitions/{petition_id}/edit", 200),
    ("organizer", "GET", "/organize/petitions/{petition_id}/signatures", 200),
    ("organizer", "GET", "/organize/petitions/{petition_id}/targets", 200),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}/targets", 200),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}/members", 200),
    ("organizer", "POST", "/organize/campaigns/{campaign_id}/members", 403),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}/edit", 403),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}/delete", 403),
    ("organizer", "GET", "/organize/campaigns/{campaign_id}/audit", 403),
    ("organizer", "POST", "/organize/campaigns/{campaign_id}/members/{owner_id}/remove", 403),
    ("organizer", "POST", "/organize/invitations/{invitation_id}/revoke", 403),
    ("organizer", "POST", "/organize/petitions/{petition_id}/delete", 403),
    ("organizer", "POST", "/organize/petitions/{draft_id}/delete", 303),
    ("organizer", "POST", "/organize/petitions/{petition_id}/offline", 303),
    ("organizer", "GET", "/organize/admin/review", 404),
    ("organizer", "GET", "/organize/admin/users", 404),
    ("organizer", "GET", "/organize/admin/audit", 404),
    ("owner", "GET", "/organize/campaigns/{campaign_id}/edit", 200),
    ("owner", "GET", "/organize/campaigns/{campaign_id}/audit", 200),
    ("owner", "POST", "/organize/campaigns/{campaign_id}/members", 303),
    ("owner", "POST", "/organize/campaigns/{campaign_id}/members/{organizer_id}/remove", 303),
    ("owner", "POST", "/organize/petitions/{petition_id}/delete", 303),
    ("owner", "POST", "/organize/campaigns/{campaign_id}/delete", 303),
    ("owner", "GET", "/organize/admin/review", 404),
    ("owner", "POST", "/organize/admin/users/{organizer_id}/status", 404),
    ("admin", "GET", "/organize/campaigns/{campaign_id}", 200),
    ("admin", "GET", "/organize/campaigns/{campaign_id}/audit", 200),
    ("admin", "GET", "/organize/petitions/{petition_id}/signatures", 200),
    ("admin", "GET", "/organize/admin/review", 200),
    ("admin", "GET", "/organize/admin/users", 200),
    ("admin", "GET", "/organize/admin/audit", 200),
    ("admin", "GET", "/organize/admin/targets", 200),
    ("admin", "POST", "/organize/petitions/{petition_id}/delete", 303),
    ("admin", "POST", "/organize/admin/users/{organizer_id}/status", 303),
]


def _client_for(app, side: Side, role: str):
    client = app.test_client()
    if role == "outsider":
        add_user(app, "outsider@example.com")
        login(client, "outsider@example.com")
    elif role == "admin":
        add_user(app, "admin@example.com", admin=True)
        login(client, "admin@example.com")
    elif role != "anonymous":
        assert login(client, getattr(side, role)).status_code == 302
    return client


@pytest.mark.parametrize("role", sorted({row[0] for row in MATRIX}))
def test_role_action_matrix(make_org_app, role):
    """Rows grouped by role; each POST row gets a campaign of its own (it may delete things)."""
    from tests.organize.conftest import build_side

    app = make_org_app()
    a = build_side(app, "a")
    client = _client_for(app, a, role)
    wrong = []
    for number, (row_role, method, path, expected) in enumerate(MATRIX):
        if row_role != role:
            continue
        side, row_client = a, client
        if method == "POST":
            side = build_side(app, f"r{number}")
            if role in ("owner", "organizer"):
                row_client = app.test_client()
                login(row_client, getattr(side, role))
        url = path.format(**vars(side))
        if method == "GET":
            response = row_client.get(url)
        else:
            page = row_client.get("/account/login" if role == "anonymous" else "/organize/")
            response = row_client.post(url, data={"csrf_token": csrf_of(page.get_data(as_text=True)),
                                              "email": "new-person@example.com", "count": "3", "note": "paper",
                                              "status": "disabled"})
        if response.status_code != expected or (
                expected == 302 and "/account/login" not in response.headers["Location"]):
            wrong.append((method, url, expected, response.status_code))
    assert wrong == []


def test_every_organizer_post_needs_its_csrf_token(org_app, two_sides):
    """R26 for the organizer pages: signed in, a POST without the token is refused with 400."""
    a, _ = two_sides
    client = org_app.test_client()
    add_user(org_app, "admin@example.com", admin=True)
    login(client, "admin@example.com")
    with org_app.app_context():
        events = db.session.scalar(select(func.count()).select_from(AuditEvent))
    posts = [r for r in org_app.url_map.iter_rules()
             if "POST" in r.methods and r.rule.startswith(("/organize", "/account", "/invitations"))]
    assert len(posts) >= 30
    for rule in posts:
        url = rule.rule
        for name in rule.arguments:
            attribute = ARGUMENTS.get(name, "campaign_id")
            value = a.extra.get(name, 1) if attribute == "extra" else getattr(a, attribute)
            url = url.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", "token")
        response = client.post(url, data={"reason": "x", "count": "1", "note": "n", "email": "e@example.com"})
        assert response.status_code == 400, (url, response.status_code)
    with org_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events
