"""The organizer's mailing pages: the ledger, cadences and routing, "deliver now" behind a
confirmation screen that says who gets what, responses; another campaign's petition answers 404
and every POST needs the session's CSRF token."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import Campaign, Delivery, DeliveryKind, TargetMailing, TargetResponse
from campaign.services.demo import DEMO_CAMPAIGN_SLUG
from campaign.services.petitions import petition_by_slug
from tests.mailings.helpers import TargetSpec, add_signer, make_petition, target_named
from tests.organize.conftest import add_user, csrf_of, login

SLUG = "g20-chechnya"


@pytest.fixture
def org(mapp: Flask, mdemo: str) -> dict[str, Any]:
    """An organizer of the demo campaign, signed in, with two signers; and another campaign's
    petition, with its own organizer."""
    with mapp.app_context():
        campaign = db.session.scalar(select(Campaign).where(Campaign.slug == DEMO_CAMPAIGN_SLUG))
        petition = petition_by_slug(db.session, SLUG)
        add_signer(db.session, petition, "Ada Lovelace", "ada@example.com", "DE", named=True, reply=True)
        add_signer(db.session, petition, "Anonymous Bob", "bob@example.com", "FR")
        other = make_petition(db.session, [TargetSpec("Mayor", "DE")], slug="other-campaign")
        ids = {"campaign": campaign.id, "petition": petition.id, "other": other.id,
               "other_campaign": other.campaign_id, "merz": target_named(db.session, "Friedrich Merz").id}
        db.session.commit()
    add_user(mapp, "org@example.org", campaign_id=ids["campaign"])
    add_user(mapp, "stranger@example.org", campaign_id=ids["other_campaign"])
    client = mapp.test_client()
    assert login(client, "org@example.org").status_code in (302, 303)
    return {"client": client, **ids}


def page(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def test_the_ledger_shows_every_target_with_its_letters_and_routing(org: dict[str, Any]) -> None:
    html = page(org["client"], f"/organize/petitions/{org['petition']}/mailings")
    assert "Friedrich Merz" in html and "Emmanuel Macron" in html
    assert "friedrich.merz@de.leaders.example.org" in html  # organizers see the addresses
    assert "Deliver now" in html and "Responses" in html
    assert "any other country" in html
    assert 'name="csrf_token"' in html


def test_another_campaigns_petition_and_anonymous_visitors_are_turned_away(mapp: Flask, org: dict[str, Any]) -> None:
    client = org["client"]
    for path in (f"/organize/petitions/{org['other']}/mailings", f"/organize/petitions/{org['other']}/deliver",
                 f"/organize/petitions/{org['other']}/responses", "/organize/petitions/999999/mailings"):
        assert client.get(path).status_code == 404, path
    assert mapp.test_client().get(f"/organize/petitions/{org['petition']}/mailings").status_code in (302, 303)


def test_posts_without_the_csrf_token_are_refused(org: dict[str, Any]) -> None:
    client = org["client"]
    for path in (f"/organize/petitions/{org['petition']}/deliver",
                 f"/organize/petitions/{org['petition']}/responses",
                 f"/organize/petitions/{org['petition']}/mailings/routing",
                 f"/organize/petitions/{org['petition']}/mailings/targets/{org['merz']}/cadence"):
        assert client.post(path, data={"confirm": "1", "targets": [org["merz"]]}).status_code == 400, path


def test_deliver_now_shows_who_gets_what_then_sends_once(mapp: Flask, org: dict[str, Any]) -> None:
    client = org["client"]
    path = f"/organize/petitions/{org['petition']}/deliver"
    first = page(client, path)
    assert first.count('name="targets"') == 21
    screen = client.post(path, data={"csrf_token": csrf_of(first), "targets": [org["merz"]]})
    assert screen.status_code == 200
    html = screen.get_data(as_text=True)
    assert "1 email</strong> will be sent now" in html
    assert "a CSV of 2 confirmed signers" in html
    assert "1 with their name and comment" in html and "1 with an email address" in html
    # The subject and the letter exactly as Merz gets them, addressed to his title.
    assert "Subject “Petition “" in html and ": 2 signatures”" in html
    assert "Dear Federal Chancellor of Germany," in html
    nonce = re.search(r'name="nonce" type="hidden" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    with mapp.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == 0  # nothing yet
    data = {"csrf_token": csrf_of(html), "targets": [org["merz"]], "nonce": nonce, "confirm": "1"}
    done = client.post(path, data=data)
    assert done.status_code == 303
    assert client.post(path, data=data).status_code == 303  # a second click adds nothing
    with mapp.app_context():
        kinds = db.session.scalars(select(Delivery.kind)).all()
        assert kinds == [DeliveryKind.NOW]
    ledger = page(client, f"/organize/petitions/{org['petition']}/mailings")
    assert "Complete petition" in ledger and "delivery-queued" in ledger


def test_deliver_now_needs_a_target(org: dict[str, Any]) -> None:
    client = org["client"]
    path = f"/organize/petitions/{org['petition']}/deliver"
    response = client.post(path, data={"csrf_token": csrf_of(page(client, path))})
    assert response.status_code == 400
    assert "Choose at least one target." in response.get_data(as_text=True)


def test_cadence_and_a_schedule_in_the_past(mapp: Flask, org: dict[str, Any]) -> None:
    client = org["client"]
    ledger_path = f"/organize/petitions/{org['petition']}/mailings"
    token = csrf_of(page(client, ledger_path))
    prefix = f"t{org['merz']}-"
    cadence = f"{ledger_path}/targets/{org['merz']}/cadence"
    client.post(cadence, data={"csrf_token": token, prefix + "cadence": "every_n", prefix + "every_n": "25"})
    with mapp.app_context():
        row = db.session.get(TargetMailing, (org["petition"], org["merz"]))
        assert (row.cadence, row.every_n) == ("every_n", 25)
    response = client.post(cadence, data={"csrf_token": token, prefix + "cadence": "daily",
                                          prefix + "first_date": "2020-01-01", prefix + "first_time": "09:00"},
                           follow_redirects=True)
    assert "The first time is in the past" in response.get_data(as_text=True)
    bad = client.post(cadence, data={"csrf_token": token, prefix + "cadence": "every_n", prefix + "every_n": "0"},
                      follow_redirects=True)
    assert "Between 1 and 1,000,000." in bad.get_data(as_text=True)


def test_routing_fallback_and_countries_of_a_shared_target(mapp: Flask, org: dict[str, Any]) -> None:
    client = org["client"]
    ledger_path = f"/organize/petitions/{org['petition']}/mailings"
    token = csrf_of(page(client, ledger_path))
    response = client.post(f"{ledger_path}/routing", data={"csrf_token": token, "routing_fallback": "nobody"},
                           follow_redirects=True)
    assert "Routing saved." in response.get_data(as_text=True)
    # The G20 list is shared between campaigns: only an admin may change what a leader covers.
    assert client.post(f"{ledger_path}/targets/{org['merz']}/countries",
                       data={"csrf_token": token, "countries": "AT"}).status_code == 404


def test_recording_a_response_and_removing_it(mapp: Flask, org: dict[str, Any]) -> None:
    client = org["client"]
    path = f"/organize/petitions/{org['petition']}/responses"
    token = csrf_of(page(client, path))
    bad = client.post(path, data={"csrf_token": token, "target": org["merz"], "responded_on": "2026-01-05",
                                  "stance": "supports", "link": "javascript:alert(1)"})
    assert bad.status_code == 400 and "https://" in bad.get_data(as_text=True)
    good = client.post(path, data={"csrf_token": token, "target": org["merz"], "responded_on": "2026-01-05",
                                   "stance": "supports", "text": "We will raise it."})
    assert good.status_code == 303
    listing = page(client, path)
    assert "We will raise it." in listing and "Supports the petition" in listing
    with mapp.app_context():
        response_id = db.session.scalar(select(TargetResponse.id))
    # Another campaign's organizer cannot remove it.
    stranger = mapp.test_client()
    login(stranger, "stranger@example.org")
    assert stranger.post(f"/organize/responses/{response_id}/delete",
                         data={"csrf_token": csrf_of(page(stranger, "/organize/"))}).status_code == 404
    assert client.post(f"/organize/responses/{response_id}/delete",
                       data={"csrf_token": token}).status_code == 303
    with mapp.app_context():
        assert db.session.scalar(select(func.count()).select_from(TargetResponse)) == 0
