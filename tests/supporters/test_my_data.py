"""Manage my data (issue 5): from the link in every supporter email, see all of a mailbox's
signatures, download them, withdraw consent, delete them (counted once, queued mail cancelled,
sent letters kept); the "send me a link" form answers the same for any address."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import (
    AuditEvent,
    OutboundEmail,
    OutboxStatus,
    Petition,
    Signature,
    SignatureStatus,
    SoftBounce,
    SupporterUpdate,
    UpdateRecipient,
)
from campaign.services.counting import signature_count
from campaign.services.petitions import create_counter_shards
from tests.support import deliver_due, form_token, text_of
from tests.supporters.conftest import csrf, messages_to, my_data_path, sign_and_confirm, sign_in


def _second_petition(app) -> None:
    with app.app_context():
        first = db.session.scalar(select(Petition))
        other = Petition(campaign_id=first.campaign_id, slug="second", title="A second petition",
                         summary="Second.", body_markdown="Text", body_html="<p>Text</p>", goal=10,
                         language="en", is_sensitive=True)
        db.session.add(other)
        create_counter_shards(db.session, other)
        other.publish()
        db.session.commit()


def _count(app, slug="g20-chechnya") -> int:
    with app.app_context():
        petition = db.session.scalar(select(Petition).where(Petition.slug == slug))
        return signature_count(db.session, petition.id)


def test_the_link_shows_every_signature_of_the_mailbox_and_nothing_of_others(app, client, demo, mailbox):
    _second_petition(app)
    path = sign_and_confirm(app, client, mailbox, "ada@example.com", name="Ada Lovelace", postcode="N1 9GU",
                            comment="For my friends", consent_updates="y")
    page = client.get("/petitions/second").get_data(as_text=True)
    client.post("/petitions/second/sign", data={"name": "Ada L.", "email": "ADA@example.com", "country": "DE",
                                                "form_token": form_token(page)})
    sign_in(client, email="someone.else@example.com", name="Grace Hopper")
    response = client.get(path)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Ada Lovelace" in html and "N1 9GU" in html and "For my friends" in html and "Ada L." in html
    assert "A second petition" in html and "Confirmed and counted" in html and "Not confirmed yet" in html
    assert "Grace Hopper" not in html and "someone.else" not in html

    export = client.get(path + "/export.json")
    assert export.status_code == 200 and export.headers["Cache-Control"] == "no-store"
    assert "attachment" in export.headers["Content-Disposition"]
    data = json.loads(export.get_data(as_text=True))
    assert {s["petition"] for s in data["signatures"]} == {
        "G20 leaders: demand an end to the arrests and torture of gay men in Chechnya", "A second petition"}
    first = next(s for s in data["signatures"] if s["petition"] != "A second petition")
    # Every personal field the signature table holds, decrypted for its owner.
    for key in ("name", "email", "postcode", "country", "comment", "language", "source", "referral_code",
                "consent_updates", "consent_name_to_targets", "consent_public_name", "consent_reply_to",
                "signed_at", "confirmed_at", "status", "keyed_hash_of_ip_address_kept"):
        assert key in first, key
    assert first["email"] == "ada@example.com" and first["consent_updates"] is True


def test_bad_and_expired_links(make_app, mailbox):
    from campaign.services.demo import seed_demo

    app = make_app(MY_DATA_TOKEN_MAX_AGE=1)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    path = sign_and_confirm(app, client, mailbox, "exp@example.com")
    assert client.get(path[:-3] + "xyz").status_code == 404
    time.sleep(2.1)
    expired = client.get(path)
    assert expired.status_code == 410 and "Ask for a new link" in expired.get_data(as_text=True)


def test_withdrawing_consent_only_ever_turns_it_off(app, client, demo, mailbox):
    path = sign_and_confirm(app, client, mailbox, "ada@example.com", consent_updates="y",
                            consent_public_name="y")
    html = client.get(path).get_data(as_text=True)
    with app.app_context():
        signature_id = db.session.scalar(select(Signature.id))
    # Untick "updates", keep the public name, try to switch on reply-to that was never given.
    response = client.post(path + "/consents", data={"csrf_token": csrf(html), "signature": signature_id,
                                                     "consent_public_name": "y", "consent_reply_to": "y"})
    assert response.status_code == 303
    with app.app_context():
        signature = db.session.get(Signature, signature_id)
        assert (signature.consent_updates, signature.consent_public_name, signature.consent_reply_to) == (
            False, True, False)
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "signature.consent_withdrawn"))
        assert event is not None and "ada" not in event.summary.lower()
    assert client.post(path + "/consents", data={"signature": signature_id}).status_code == 400  # no CSRF


def test_deleting_a_confirmed_signature_uncounts_it_once_and_cancels_queued_mail(app, client, demo, mailbox):
    path = sign_and_confirm(app, client, mailbox, "ada@example.com", name="Ada Lovelace", country="DE")
    sign_and_confirm(app, client, mailbox, "bob@example.com", name="Bob")
    assert _count(app) == 2
    with app.app_context():
        ada = db.session.scalar(select(Signature).where(Signature.country == "DE", Signature.id == 1))
        ada_index = ada.email_index
        letters = db.session.scalars(select(OutboundEmail).where(OutboundEmail.signature_id == ada.id,
                                                                 OutboundEmail.kind == "letter_to_target"))
        letter_ids = [row.id for row in letters]
        # One letter already went out, the other is still queued.
        sent_row = db.session.scalar(select(OutboundEmail).where(OutboundEmail.signature_id == ada.id,
                                                                 OutboundEmail.status == OutboxStatus.SENT))
        queued = OutboundEmail(idempotency_key="test:queued", kind="signature_already_confirmed",
                               signature_id=ada.id, petition_id=ada.petition_id)
        db.session.add(queued)
        db.session.commit()
        queued_id, sent_id = queued.id, sent_row.id if sent_row else None
        # What supporter updates keep under her blind index (issue 7) goes with her last signature.
        update = SupporterUpdate(campaign_id=1, subject="News", body_markdown="Hello")
        db.session.add(update)
        db.session.flush()
        db.session.add_all([UpdateRecipient(update_id=update.id, signature_id=ada.id, email_index=ada_index),
                            SoftBounce(email_index=ada_index, count=1)])
        db.session.commit()
    confirm_page = client.get(path + "/delete?signature=1")
    html = confirm_page.get_data(as_text=True)
    assert "Letters already sent to officials cannot be recalled" in html
    token = csrf(html)
    assert client.post(path + "/delete", data={"signature": "1"}).status_code == 400  # no CSRF token
    assert client.post(path + "/delete", data={"csrf_token": token, "signature": "1"}).status_code == 303
    assert client.post(path + "/delete", data={"csrf_token": token, "signature": "1"}).status_code == 303
    assert _count(app) == 1  # exactly once, whatever the double click
    with app.app_context():
        assert db.session.get(Signature, 1) is None and db.session.get(Signature, 2) is not None
        assert db.session.get(OutboundEmail, queued_id).status == OutboxStatus.CANCELLED
        # Ada's letter went out when Bob's emails were delivered: it stays sent.
        assert sent_id is not None and db.session.get(OutboundEmail, sent_id).status == OutboxStatus.SENT
        assert all(db.session.get(OutboundEmail, i) is not None for i in letter_ids)
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "signature.deleted_by_signer"))
        summaries = [e.summary for e in events]
        assert len(summaries) == 1 and "counted" in summaries[0]
        assert not any("Ada" in s or "ada@" in s for s in summaries)
    assert "We hold no signatures" in client.get(path).get_data(as_text=True)
    with app.app_context():
        # The mailbox has nothing left: its blind index is gone from the outbox too.
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.recipient_index == ada_index)) == 0
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.recipient_index.is_not(None))) > 0  # Bob's rows keep theirs
        assert db.session.scalar(select(func.count()).select_from(UpdateRecipient).where(
            UpdateRecipient.email_index == ada_index)) == 0
        assert db.session.get(SoftBounce, ada_index) is None


def test_a_link_cannot_touch_another_mailboxs_signature(app, client, demo, mailbox):
    path = sign_and_confirm(app, client, mailbox, "ada@example.com")
    sign_and_confirm(app, client, mailbox, "bob@example.com", name="Bob")
    token = csrf(client.get(path).get_data(as_text=True))
    client.post(path + "/delete", data={"csrf_token": token, "signature": "2"})
    client.post(path + "/consents", data={"csrf_token": token, "signature": "2"})
    with app.app_context():
        assert db.session.get(Signature, 2).status == SignatureStatus.CONFIRMED
    assert _count(app) == 2


def test_send_me_a_link_answers_the_same_for_any_address_and_obeys_the_cap(make_app, mailbox):
    from campaign.services.demo import seed_demo

    app = make_app(EMAILS_PER_ADDRESS_PER_DAY=3)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    sign_in(client, email="ada@example.com")  # email 1 of 3 today

    def ask(address: str):
        page = client.get("/my-data")
        response = client.post("/my-data", data={"csrf_token": csrf(page.get_data(as_text=True)),
                                                 "email": address})
        return response.status_code, response.headers["Location"], response.get_data()

    assert ask("ada@example.com") == ask("nobody@example.com") == ask("Ada@Example.com")
    deliver_due(app)
    links = [m for m in messages_to(mailbox, "ada@example.com") if "/my-data/" in text_of(m)
             and m["Subject"] == "Your link to manage your data"]
    assert len(links) == 2  # the third ask met the daily cap of 3 form emails
    assert messages_to(mailbox, "nobody@example.com") == []
    assert client.get(my_data_path(links[0])).status_code == 200
    page = client.get("/my-data")
    assert client.post("/my-data", data={"email": "ada@example.com"}).status_code == 400  # CSRF
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.kind == "my_data_link")) == 2
    assert page.status_code == 200


def test_every_supporter_email_carries_the_manage_link(app, client, demo, mailbox):
    sign_and_confirm(app, client, mailbox, "ada@example.com")
    sign_in(client, email="ada@example.com")  # already signed: the "already confirmed" email
    deliver_due(app)
    supporter_mail = messages_to(mailbox, "ada@example.com")
    assert {m["Subject"] for m in supporter_mail} >= {"Please confirm your signature", "You have already signed"}
    for message in supporter_mail:
        assert my_data_path(message)
        html = message.get_body(("html",)).get_content()
        assert "/my-data/" in html


# R42: every personal column of a signature, and the export key that carries it. A new column of
# Signature must be put in one of these two tables, so the export cannot silently fall behind.
PERSONAL = {
    "name_encrypted": "name", "email_encrypted": "email", "postcode_encrypted": "postcode",
    "country": "country", "comment": "comment", "source": "source", "locale": "language",
    "referral_code": "referral_code", "referred_by": "came_through_someone_elses_share",
    "consent_updates": "consent_updates", "consent_name_to_targets": "consent_name_to_targets",
    "consent_reply_to": "consent_reply_to", "consent_public_name": "consent_public_name",
    "created_at": "signed_at", "confirmed_at": "confirmed_at", "status": "status",
    "ip_hash": "keyed_hash_of_ip_address_kept", "network_hash": "keyed_hash_of_ip_address_kept",
}
NOT_PERSONAL = {
    "id", "petition_id",  # the petition is exported by its title and URL
    "email_index",  # the keyed hash the link itself is bound to
    "email_domain_hash", "hold_reasons", "held_at", "released_at", "invalidated_at",
    "invalidation_reason",  # moderation records: a held signature is shown as not confirmed
    "anonymized_at", "routed_at", "reminded_at",  # processing stamps
}


def test_the_export_covers_every_personal_column(app, client, demo, mailbox):
    columns = {c.name for c in Signature.__table__.columns}
    assert columns == set(PERSONAL) | NOT_PERSONAL, "classify the new Signature column here"
    path = sign_and_confirm(app, client, mailbox, "all@example.com", postcode="1000", comment="c",
                            consent_updates="y")
    exported = json.loads(client.get(path + "/export.json").get_data(as_text=True))["signatures"][0]
    covered = [column for column, key in PERSONAL.items() if key in exported]
    assert len(covered) / len(PERSONAL) == 1.0, set(PERSONAL) - set(covered)
