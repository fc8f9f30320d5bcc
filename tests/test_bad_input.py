"""Bad input on the public side: clear messages, correct status, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markupsafe import escape

from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature
from tests.support import ROOT, deliver_due, form_token, sign, text_of

NAUGHTY = ROOT.parent / "shared" / "data" / "naughty-strings" / "blns.json"


def _nothing_written(app) -> bool:
    with app.app_context():
        return db.session.query(Signature).count() == 0 and db.session.query(OutboundEmail).count() == 0


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": ""}, "Enter your full name."),
    ({"name": "   "}, "Enter your full name."),
    ({"name": "x" * 201}, "Use at most 200 characters."),
    ({"email": ""}, "Enter your email address."),
    ({"email": "not-an-email"}, "Enter a valid email address"),
    ({"email": "a@b"}, "Enter a valid email address"),
    ({"country": ""}, "Choose your country."),
    ({"country": "XX"}, "Choose a country from the list."),
    ({"country": "EU"}, "Choose a country from the list."),
    ({"postcode": "1" * 21}, "Use at most 20 characters."),
    ({"comment": "c" * 1001}, "Use at most 1,000 characters."),
    ({"name": "Ada\x00Lovelace"}, "Remove the control characters"),
    ({"comment": "bell\x07"}, "Remove the control characters"),
])
def test_each_bad_field_gets_a_message_next_to_it_and_nothing_is_written(client, demo, app, fields, message):
    response = sign(client, **fields)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html
    assert 'aria-invalid="true"' in html
    assert _nothing_written(app)


def test_what_was_typed_is_kept_after_an_error(client, demo):
    html = sign(client, name="Ada Lovelace", email="broken", comment="My comment").get_data(as_text=True)
    assert 'value="Ada Lovelace"' in html and "My comment" in html


def test_unknown_petition_is_404(client, demo):
    assert client.get("/petitions/no-such-petition").status_code == 404
    assert client.post("/petitions/no-such-petition/sign", data={}).status_code == 404
    assert client.get("/api/v1/petitions/no-such-petition").status_code == 404
    assert client.get("/api/v1/petitions/no-such-petition").content_type == "application/problem+json"


def test_draft_petition_is_not_visible(client, demo, app):
    with app.app_context():
        db.session.query(Petition).update({"status": "draft"})
        db.session.commit()
    assert client.get("/petitions/g20-chechnya").status_code == 404


def test_closed_petition_shows_its_count_and_refuses_signatures(client, demo, app):
    token = form_token(client.get("/petitions/g20-chechnya").get_data(as_text=True))
    with app.app_context():
        db.session.get(Petition, 1).close()
        db.session.commit()
    page = client.get("/petitions/g20-chechnya")
    assert page.status_code == 200 and "This petition is closed" in page.get_data(as_text=True)
    assert "Sign the petition</button>" not in page.get_data(as_text=True)
    response = client.post("/petitions/g20-chechnya/sign", data={
        "name": "Late", "email": "late@example.com", "country": "FR", "form_token": token})
    assert response.status_code == 410
    assert "closed" in response.get_data(as_text=True)
    assert _nothing_written(app)


def test_a_token_for_another_petition_is_refused(client, demo, app):
    token = form_token(client.get("/petitions/g20-chechnya").get_data(as_text=True))
    from campaign.web.forms import make_form_token

    with app.test_request_context():
        other = make_form_token(999)
    response = client.post("/petitions/g20-chechnya/sign", data={
        "name": "X", "email": "x@example.com", "country": "DE", "form_token": other})
    assert response.status_code == 400
    assert token != other
    assert _nothing_written(app)


def test_an_expired_form_keeps_the_input_and_asks_again(make_app, mailbox):
    app = make_app(FORM_TOKEN_MAX_AGE=-1)
    from campaign.services.demo import seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    response = sign(app.test_client(), name="Slow Reader")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "open for a long time" in html and 'value="Slow Reader"' in html
    assert _nothing_written(app)


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "https://evil.example"},
])
def test_posts_from_other_sites_are_refused(client, demo, app, headers):
    token = form_token(client.get("/petitions/g20-chechnya").get_data(as_text=True))
    response = client.post("/petitions/g20-chechnya/sign", headers=headers, data={
        "name": "X", "email": "x@example.com", "country": "DE", "form_token": token})
    assert response.status_code == 400
    assert _nothing_written(app)


def test_same_origin_posts_are_accepted(client, demo):
    token = form_token(client.get("/petitions/g20-chechnya").get_data(as_text=True))
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://campaign.test"}):
        response = client.post("/petitions/g20-chechnya/sign", headers=headers, data={
            "name": "X", "email": "x@example.com", "country": "DE", "form_token": token})
        assert response.status_code == 303


def test_a_database_error_mid_transaction_leaves_nothing_half_written(client, demo, app, monkeypatch):
    import campaign.services.signing as signing

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(signing, "queue_email_once", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert sign(client).status_code == 500
    assert _nothing_written(app)


def test_naughty_strings_are_accepted_or_refused_clearly_and_always_escaped(client, demo, app, mailbox):
    strings = [s for s in json.loads(Path(NAUGHTY).read_text()) if s.strip()]
    accepted: list[tuple[str, str]] = []
    for number, text in enumerate(strings):
        name = text[:200]
        response = sign(client, name=name, email=f"naughty{number}@example.com", comment=text[:1000])
        assert response.status_code in (303, 400), (response.status_code, text)
        if response.status_code == 400:
            assert "Remove the control characters" in response.get_data(as_text=True), text
            assert any(ord(ch) < 32 or ord(ch) == 127 for ch in text), text
        else:
            accepted.append((f"naughty{number}@example.com", name.strip()))
    assert len(accepted) > 400
    deliver_due(app)
    by_address = {m["To"].addresses[0].addr_spec: m for m in mailbox.messages}
    assert len(by_address) == len(accepted)
    for address, name in accepted:
        message = by_address[address]
        assert f"Hello {name}," in text_of(message)
        html = message.get_body(("html",)).get_content()
        assert f"Hello {escape(name)}," in html
