"""R29: organizer A calls every organizer route, found from the URL map, with organizer B's ids
(campaigns, petitions, signatures, targets, paper entries, invitations, members), by GET and by
POST with a valid CSRF token: every answer is 403 or 404 and nothing of B's changes. Then A
calls the routes on A's own objects with B's ids in the form fields: still nothing of B's moves.

A route whose id parameter this test does not know fails it, so new routes get covered."""

from __future__ import annotations

import re

from sqlalchemy import select

from campaign.extensions import db
from campaign.models import CampaignTarget, Petition, User
from tests.organize.conftest import build_side, csrf_of, login

ORGANIZER_BLUEPRINTS = {"organize", "moderation", "mailings", "admin", "exports", "translations"}


def _ids(side):
    return {"campaign_id": side.campaign_id, "petition_id": side.petition_id,
            "signature_id": side.signature_id, "target_id": side.target_id, "entry_id": side.offline_id,
            "invitation_id": side.invitation_id, "user_id": side.organizer_id,
            "draft_id": side.draft_id, **side.extra}


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in ORGANIZER_BLUEPRINTS:
            continue
        ints = [name for name in rule.arguments if "int" in str(rule._converters[name].__class__).lower()]
        if ints:
            yield rule, ints


def _url(rule, ids):
    url = rule.rule
    for name in rule.arguments:
        url = re.sub(rf"<(?:[a-z]+:)?{name}>", str(ids[name]), url)
    return url


def _snapshot(app, side):
    """Every row of B's campaign, by table, as plain values."""
    with app.app_context():
        petition_ids = set(db.session.scalars(select(Petition.id).where(Petition.campaign_id == side.campaign_id)))
        target_ids = set(db.session.scalars(select(CampaignTarget.target_id).where(
            CampaignTarget.campaign_id == side.campaign_id)))
        user_ids = {side.owner_id, side.organizer_id}
        state = {}
        for table in db.metadata.sorted_tables:
            if table.name in {"audit_events", "attempt_counters", "outbound_emails"}:
                continue
            conditions = []
            if "campaign_id" in table.c:
                conditions.append(table.c.campaign_id == side.campaign_id)
            if "petition_id" in table.c:
                conditions.append(table.c.petition_id.in_(petition_ids))
            if table.name == "petitions":
                conditions.append(table.c.id.in_(petition_ids))
            if table.name == "campaigns":
                conditions.append(table.c.id == side.campaign_id)
            if table.name == "targets":
                conditions.append(table.c.id.in_(target_ids))
            if table.name == "users":
                conditions.append(table.c.id.in_(user_ids))
            if not conditions:
                continue
            from sqlalchemy import or_

            rows = db.session.execute(table.select().where(or_(*conditions))).all()
            state[table.name] = sorted(repr(tuple(row)) for row in rows)
        return state


def test_organizer_a_cannot_reach_any_object_of_campaign_b(org_app_with_sides):
    app, side_a, side_b = org_app_with_sides
    client = app.test_client()
    assert login(client, side_a.owner).status_code == 302
    token = csrf_of(client.get("/organize/").get_data(as_text=True))
    before = _snapshot(app, side_b)
    ids_b = _ids(side_b)
    unknown, leaked, tried = [], [], 0
    for rule, ints in _routes(app):
        if any(name not in ids_b for name in ints):
            unknown.append(rule.rule)
            continue
        url = _url(rule, ids_b)
        for method in sorted(rule.methods & {"GET", "POST"}):
            data = {"csrf_token": token, "reason": "x", "reason_text": "x", "expected": "0", "action": "invalidate",
                    "country": "FR"} if method == "POST" else None
            response = client.open(url, method=method, data=data)
            tried += 1
            if response.status_code not in (403, 404):
                leaked.append((method, url, response.status_code))
    assert unknown == [], f"routes with id parameters this test does not know: {unknown}"
    assert tried > 40
    assert leaked == [], f"organizer A reached campaign B's objects: {leaked}"
    assert _snapshot(app, side_b) == before


def test_b_ids_in_form_fields_of_a_routes_change_nothing_of_b(org_app_with_sides):
    app, side_a, side_b = org_app_with_sides
    client = app.test_client()
    login(client, side_a.owner)
    token = csrf_of(client.get("/organize/").get_data(as_text=True))
    before = _snapshot(app, side_b)
    ids_a, _ids_b = _ids(side_a), _ids(side_b)
    fields = {"csrf_token": token, "target_id": side_b.target_id, "campaign": side_b.campaign_id,
              "campaign_id": side_b.campaign_id, "petition_id": side_b.petition_id,
              "user_id": side_b.organizer_id, "signature_id": side_b.signature_id, "group": "City",
              "reason": "x", "email": side_b.organizer}
    destructive = ("delete", "remove", "close", "withdraw", "revoke", "invalidate", "apply", "status", "totp")
    for rule, ints in _routes(app):
        if "POST" not in rule.methods or any(n not in ids_a for n in ints) or rule.endpoint.endswith(destructive):
            continue
        client.post(_url(rule, ids_a), data=fields)
    assert _snapshot(app, side_b) == before


def test_an_organizer_is_not_told_that_admin_pages_exist(org_app_with_sides):
    app, side_a, _side_b = org_app_with_sides
    client = app.test_client()
    login(client, side_a.owner)
    admin_rules = [r for r in app.url_map.iter_rules() if "/admin/" in r.rule and "GET" in r.methods
                   and not r.arguments]
    assert admin_rules
    for rule in admin_rules:
        assert client.get(rule.rule).status_code == 404, rule.rule
    with app.app_context():
        assert not db.session.scalar(select(User.is_admin).where(User.email == side_a.owner))


import pytest  # noqa: E402 - fixtures below the tests read better here


@pytest.fixture
def org_app_with_sides(make_sec_app):
    app = make_sec_app()
    return app, build_side(app, "a"), build_side(app, "b")
