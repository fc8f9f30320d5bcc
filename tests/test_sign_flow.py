"""The supporter's path through the web: petition page, sign, check email, confirm, count."""

from __future__ import annotations

import re
from pathlib import Path

from campaign.extensions import db
from campaign.models import OutboundEmail, Signature, SignatureStatus
from tests.support import confirm, confirm_path, deliver_due, form_token, sign, text_of


def _count(client, slug="g20-chechnya") -> int:
    return client.get(f"/api/v1/petitions/{slug}").get_json()["signature_count"]


def test_petition_page_shows_what_a_supporter_needs(client, demo):
    response = client.get("/petitions/g20-chechnya")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "G20 leaders: demand an end to the arrests and torture of gay men in Chechnya" in html
    assert "Friedrich Merz" in html and "Federal Chancellor of Germany" in html
    assert "100,000" in html and 'role="progressbar"' in html
    assert "<strong>We ask the leaders of the G20</strong>" in html  # Markdown rendered
    for label in ("Full name", "Email", "Country", "Postcode", "Comment"):
        assert re.search(rf"<label for=\"\w+\">{label}</label>", html), label
    assert "Sign the petition</button>" in html
    assert 'type="checkbox"' in html and "checked" not in html.split('type="checkbox"')[1][:40]
    assert "<option value=\"DE\">Germany</option>" in html
    # Cacheable: the page sets no session cookie.
    assert "Set-Cookie" not in response.headers
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_sign_confirm_and_count(client, demo, app, mailbox):
    assert _count(client) == 0
    response = sign(client, name="Ada Lovelace", email="  Ada@Example.com ")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/petitions/g20-chechnya/check-email")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "check your email" in page.lower()
    assert _count(client) == 0  # pending signatures do not count

    assert deliver_due(app) == {"sent": 1}
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["Subject"] == "Please confirm your signature"
    assert "ada@example.com" in message["To"].lower()
    assert message.get_body(("html",)) is not None
    path = confirm_path(message)

    # Opening the link (as a mail scanner would) changes nothing.
    opened = client.get(path)
    assert opened.status_code == 200 and "Confirm my signature" in opened.get_data(as_text=True)
    assert opened.headers["Cache-Control"] == "no-store"
    assert _count(client) == 0

    done = confirm(client, path)
    assert done.status_code == 303
    assert _count(client) == 1
    thanks = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "your signature is confirmed" in thanks

    again = client.get(path)
    assert again.status_code == 200 and "already confirmed" in again.get_data(as_text=True)
    assert _count(client) == 1


def test_confirm_post_twice_counts_once(client, demo, app, mailbox):
    sign(client)
    deliver_due(app)
    path = confirm_path(mailbox.messages[0])
    page = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post(path, data={"csrf_token": token}).status_code == 303
    assert client.post(path, data={"csrf_token": token}).status_code == 303
    assert _count(client) == 1


def test_confirm_post_without_csrf_token_is_refused(client, demo, app, mailbox):
    sign(client)
    deliver_due(app)
    path = confirm_path(mailbox.messages[0])
    assert client.post(path).status_code == 400
    assert _count(client) == 0


def test_same_address_again_is_one_signature_and_an_identical_page(client, demo, app, mailbox):
    first = sign(client, email="grace@example.org")
    second = sign(client, email="  GRACE@example.org")
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert first.get_data() == second.get_data()
    with app.app_context():
        assert db.session.query(Signature).count() == 1
    deliver_due(app)
    # Pending: the confirmation is sent again, so a lost email can be recovered.
    assert len(mailbox.messages) == 2
    assert all(m["Subject"] == "Please confirm your signature" for m in mailbox.messages)


def test_signing_again_after_confirming_tells_the_owner_by_email(client, demo, app, mailbox):
    sign(client, email="hedy@example.net")
    deliver_due(app)
    confirm(client, confirm_path(mailbox.messages[0]))
    repeat = sign(client, email="Hedy@Example.net")
    assert repeat.status_code == 303
    deliver_due(app)
    assert mailbox.messages[-1]["Subject"] == "You have already signed"
    assert "already signed" in text_of(mailbox.messages[-1])
    assert _count(client) == 1


def test_at_most_five_emails_per_address_and_petition(client, demo, app, mailbox):
    for _ in range(20):
        assert sign(client, email="victim@example.com").status_code == 303
    deliver_due(app)
    assert len(mailbox.messages) == 5
    with app.app_context():
        assert db.session.query(OutboundEmail).count() == 5


def test_gmail_aliases_are_one_signer(client, demo, app):
    for address in ("a.b+x@gmail.com", "ab@googlemail.com", "AB@gmail.com"):
        sign(client, email=address)
    with app.app_context():
        assert db.session.query(Signature).count() == 1


def test_new_and_repeat_answers_are_byte_identical(client, demo, app):
    sign(client, email="known@example.com")
    deliver_due(app)
    new = sign(client, email="unknown@example.com")
    repeat = sign(client, email="known@example.com")
    assert new.status_code == repeat.status_code
    assert new.get_data() == repeat.get_data()
    drop = {"Date", "Content-Length"}
    assert {k: v for k, v in new.headers if k not in drop} == {
        k: v for k, v in repeat.headers if k not in drop}


def test_signatures_are_encrypted_at_rest(client, demo, app, tmp_path):
    sign(client, name="Zelimkhan Secretname", email="secret.person@example.com", postcode="364000")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
        path = app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    raw = b"".join(p.read_bytes() for p in Path(path).parent.glob(Path(path).name + "*"))
    for secret in (b"Secretname", b"secret.person", b"364000"):
        assert secret not in raw
    with app.app_context():
        signature = db.session.query(Signature).one()
        assert signature.status == SignatureStatus.PENDING
        assert len(signature.email_index) == 64


def test_form_token_is_per_page_and_signed(client, demo):
    html = client.get("/petitions/g20-chechnya").get_data(as_text=True)
    token = form_token(html)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = client.post("/petitions/g20-chechnya/sign",
                           data={"name": "X", "email": "x@example.com", "country": "DE", "form_token": tampered})
    assert response.status_code == 400
    response = client.post("/petitions/g20-chechnya/sign",
                           data={"name": "X", "email": "x@example.com", "country": "DE"})
    assert response.status_code == 400
