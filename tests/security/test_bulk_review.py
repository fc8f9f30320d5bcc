"""R18: an organizer releases or invalidates signatures in bulk by IP or network (through the
keyed hashes), email domain, country or time window; the preview count equals the number
changed, and the count is exact afterwards."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import Petition, Signature, SignatureStatus, User
from campaign.models.base import utcnow
from campaign.services import abuse
from campaign.services.emails import parse_email
from campaign.services.signing import SignerInput, SigningSignals, confirm_signature, sign_petition
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, count_of, demo_petition_id

SIGNERS = [
    # (ip, email, country, confirmed)
    ("198.51.100.1", "a1@corp.example", "DE", True),
    ("198.51.100.2", "a2@corp.example", "DE", False),
    ("198.51.100.77", "a3@other.example", "FR", True),
    ("198.51.101.5", "b1@other.example", "FR", True),
    ("198.51.200.9", "c1@googlemail.com", "NL", True),
    ("2001:db8:1:2::5", "v6a@other.example", "NL", True),
    ("2001:db8:1:3::9", "v6b@other.example", "NL", False),
    ("203.0.113.4", "d1@corp.example", "DE", True),
]


@pytest.fixture
def world(sec_app):
    """The demo petition with SIGNERS, some held; an admin to act."""
    with sec_app.app_context():
        petition = db.session.scalar(select(Petition).where(Petition.slug == SLUG))
        for number, (ip, email, country, confirmed) in enumerate(SIGNERS):
            sign_petition(db.session, petition, SignerInput(name=f"S{number}", email=parse_email(email),
                                                            country=country),
                          ip=ip, signals=SigningSignals(ip=ip, honeypot_filled=number % 3 == 0))
            row = db.session.scalar(select(Signature).order_by(Signature.id.desc()).limit(1))
            if confirmed:
                confirm_signature(db.session, row)
        actor = User(email="admin@example.org", password_hash="x", is_admin=True, status="active",
                     session_token="t")
        db.session.add(actor)
        db.session.commit()
    return sec_app


def _act(app, action, **filters):
    with app.app_context():
        petition = db.session.get(Petition, demo_petition_id(app))
        actor = db.session.scalar(select(User).where(User.email == "admin@example.org"))
        selection = abuse.Selection(**filters)
        if action == "release":
            preview = abuse.preview_release(db.session, petition, selection)
            result = abuse.release_held(db.session, actor, petition, selection)
        else:
            preview = abuse.preview_invalidation(db.session, petition, selection)
            result = abuse.invalidate_matching(db.session, actor, petition, selection, "bot run")
        db.session.commit()
        return preview, result


def _counted(app):
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(Signature).where(
            Signature.status == SignatureStatus.CONFIRMED)) or 0)


@pytest.mark.parametrize(("filters", "expected"), [
    ({"ip": "198.51.100.2"}, 1),                 # one address
    ({"ip": "198.51.100.0/24"}, 3),              # the stored network
    ({"ip": "198.51.100.0/28"}, 2),              # narrower: expanded into addresses
    ({"ip": "198.51.0.0/16"}, 5),                # wider: expanded into /24 networks
    ({"ip": "2001:db8:1::/48"}, 2),              # IPv6: the stored /48
    ({"ip": "2001:db8:1:2::/120"}, 1),           # IPv6 narrow prefix: addresses
    ({"domain": "corp.example"}, 3),
    ({"domain": "GMAIL.com"}, 1),                # the same alias rules as the blind index
    ({"country": "fr"}, 2),
    ({"domain": "corp.example", "country": "DE", "ip": "198.51.100.0/24"}, 2),
])
def test_invalidation_preview_equals_changed_and_counts_stay_exact(world, filters, expected):
    before_count, before_counted = count_of(world), _counted(world)
    preview, result = _act(world, "invalidate", **filters)
    assert preview == result.changed == expected
    assert count_of(world) == before_count + result.counted == _counted(world)
    assert before_counted - _counted(world) == -result.counted
    # Running it again changes nothing.
    assert _act(world, "invalidate", **filters) == (0, abuse.BulkResult(0, 0))


def test_time_window(world):
    with world.app_context():
        rows = list(db.session.scalars(select(Signature).order_by(Signature.id)))
        for age, row in enumerate(rows):
            row.created_at = utcnow() - timedelta(hours=age)
        db.session.commit()
    now = utcnow()
    preview, result = _act(world, "invalidate", since=now - timedelta(hours=3, minutes=30),
                           until=now - timedelta(minutes=30))
    assert preview == result.changed == 3  # ages 1, 2 and 3 hours


@pytest.mark.parametrize("typed", ["198.0.0.0/8", "10.0.0.0/11", "2001:db8::/32", "2001:db8:1:2::/64",
                                   "not an address", "198.51.100.1/33"])
def test_unsupported_filters_are_refused_with_a_reason(world, typed):
    with pytest.raises(abuse.SelectionError) as raised:
        _act(world, "invalidate", ip=typed)
    assert raised.value.field == "ip"


def test_invalidation_needs_a_filter(world):
    with pytest.raises(abuse.SelectionError):
        _act(world, "invalidate")


def test_release_by_filter_counts_confirmed_ones_once(world):
    held = [s for s in db_rows(world) if s.status == "held"]
    assert len(held) == 3  # numbers 0, 3 and 6 filled the honeypot
    before = count_of(world)
    preview, result = _act(world, "release", reason="honeypot", country="DE")
    assert preview == result.changed == 1 and result.counted == 1
    assert count_of(world) == before + 1 == _counted(world)
    preview, result = _act(world, "release")
    assert preview == result.changed == 2
    assert count_of(world) == _counted(world)
    assert _act(world, "release") == (0, abuse.BulkResult(0, 0))


def db_rows(app):
    with app.app_context():
        rows = list(db.session.scalars(select(Signature).order_by(Signature.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def test_moderation_pages_preview_then_apply(world):
    """Through the organizer's pages: a preview changes nothing; apply changes exactly that."""
    add_user(world, "root@example.org", admin=True)
    client = world.test_client()
    login(client, "root@example.org")
    petition_id = demo_petition_id(world)
    page = client.get(f"/organize/petitions/{petition_id}/moderation")
    assert page.status_code == 200
    form = {"csrf_token": csrf_of(page.get_data(as_text=True)), "domain": "corp.example",
            "action": "invalidate", "reason_text": "a bot farm"}
    preview = client.post(f"/organize/petitions/{petition_id}/moderation/preview", data=form)
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "<strong>3</strong> signatures would be" in html
    assert [s.status for s in db_rows(world)].count("invalidated") == 0
    expected = re.search(r'name="expected" value="(\d+)"', html)
    assert expected and expected.group(1) == "3"
    applied = client.post(f"/organize/petitions/{petition_id}/moderation/apply",
                          data={**form, "expected": "3"})
    assert applied.status_code == 303
    assert [s.status for s in db_rows(world)].count("invalidated") == 3
    assert count_of(world) == _counted(world)


def test_apply_refuses_when_the_matching_set_changed_since_the_preview(world):
    add_user(world, "root@example.org", admin=True)
    client = world.test_client()
    login(client, "root@example.org")
    petition_id = demo_petition_id(world)
    token = csrf_of(client.get(f"/organize/petitions/{petition_id}/moderation").get_data(as_text=True))
    response = client.post(f"/organize/petitions/{petition_id}/moderation/apply", data={
        "csrf_token": token, "country": "NL", "action": "invalidate", "reason_text": "x", "expected": "1"})
    assert response.status_code == 409
    assert "Nothing was changed" in response.get_data(as_text=True)
    assert [s.status for s in db_rows(world)].count("invalidated") == 0
