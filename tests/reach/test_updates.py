"""Updates to supporters, through the organizer pages and the sending code run in-process on
SQLite (the worker path is in test_integration.py): merge fields, the bad inputs of the issue,
audience and suppressions, one-click unsubscribe, pause and cancel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import (
    AuditEvent,
    RecipientStatus,
    Signature,
    SupporterUpdate,
    Suppression,
    UpdateRecipient,
    UpdateStatus,
)
from campaign.models.base import utcnow
from campaign.services.suppression import suppress
from campaign.services.updates import send_batch, send_test, start_due_updates
from tests.organize.conftest import csrf_of
from tests.reach.conftest import (
    ORGANIZER,
    World,
    add_signers,
    index_of,
    post_form,
    recipient_of,
    signed_in,
    unsubscribe_path,
)
from tests.support import text_of

BODY = "Hello {{ first_name }},\n\nWe delivered **{{ petition_title }}**: [see it]({{ petition_link }})."


def _compose(client, world: World, **fields) -> object:
    data = {"subject": "We delivered it", "body_markdown": BODY, "petition_id": str(world.petition_id),
            "language": ""} | fields
    page = client.get(f"/organize/campaigns/{world.campaign_id}/updates/new").get_data(as_text=True)
    key = page.split('name="form_key" type="hidden" value="')[1].split('"')[0]
    return client.post(f"/organize/campaigns/{world.campaign_id}/updates/new",
                       data={"csrf_token": csrf_of(page), "form_key": key, **data})


def _update_id(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return int(response.headers["Location"].rstrip("/").split("/")[-1])


def _send_all(app, update_id: int) -> None:
    with app.app_context():
        start_due_updates(db.session)
        while send_batch(db.session, update_id).claimed:
            pass
        db.session.remove()


def test_an_unknown_merge_field_is_a_clear_error_when_composing(world):
    client = signed_in(world.app)
    response = _compose(client, world, body_markdown="Hi {{ first_nme }}!")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "“{{ first_nme }}” is not a merge field" in html and "{{ first_name }}" in html
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SupporterUpdate)) == 0


def test_preview_shows_merge_fields_filled_and_markdown_sanitized(world):
    add_signers(world.app, world.petition_id, 3)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world, body_markdown=BODY + "\n\n<script>alert(1)</script>"))
    html = client.get(f"/organize/updates/{update_id}").get_data(as_text=True)
    assert "Hello Olga," in html and "<strong>Petition reach-one</strong>" in html
    assert 'href="http://campaign.test/petitions/reach-one"' in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "3</strong> people would get it" in html


def test_a_double_submitted_form_makes_one_draft_and_a_double_click_on_send_one_mailing(world):
    add_signers(world.app, world.petition_id, 4)
    client = signed_in(world.app)
    page = client.get(f"/organize/campaigns/{world.campaign_id}/updates/new").get_data(as_text=True)
    key = page.split('name="form_key" type="hidden" value="')[1].split('"')[0]
    data = {"csrf_token": csrf_of(page), "form_key": key, "subject": "Twice", "body_markdown": "Hi",
            "petition_id": ""}
    first = client.post(f"/organize/campaigns/{world.campaign_id}/updates/new", data=data)
    second = client.post(f"/organize/campaigns/{world.campaign_id}/updates/new", data=data)
    assert first.headers["Location"] == second.headers["Location"]
    update_id = _update_id(first)
    send_page = client.get(f"/organize/updates/{update_id}/send").get_data(as_text=True)
    assert "Send to 4 people" in send_page
    token = csrf_of(send_page)
    for _ in range(2):
        response = client.post(f"/organize/updates/{update_id}/send", data={"csrf_token": token, "when": "now"})
        assert response.status_code == 303
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SupporterUpdate)) == 1
        events = db.session.scalars(select(AuditEvent.action).where(AuditEvent.action == "update.schedule")).all()
        assert len(events) == 1
    _send_all(world.app, update_id)
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(UpdateRecipient)) == 4


def test_an_audience_of_zero_and_a_time_in_the_past_are_refused(world):
    add_signers(world.app, world.petition_id, 2, consent=False)  # confirmed, but did not consent
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    response = post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"})
    assert response.status_code == 400
    assert "Nobody would receive this update" in response.get_data(as_text=True)

    add_signers(world.app, world.petition_id, 1, start=100)
    past = utcnow() - timedelta(days=1)
    response = post_form(client, f"/organize/updates/{update_id}/send", {
        "when": "later", "send_date": past.date().isoformat(), "send_time": "09:00"})
    assert response.status_code == 400
    assert "That time has passed" in response.get_data(as_text=True)
    with world.app.app_context():
        assert db.session.get(SupporterUpdate, update_id).status == UpdateStatus.DRAFT


def test_a_scheduled_update_waits_for_its_time(world):
    add_signers(world.app, world.petition_id, 2)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    later = utcnow() + timedelta(hours=2)
    response = post_form(client, f"/organize/updates/{update_id}/send", {
        "when": "later", "send_date": later.date().isoformat(), "send_time": later.strftime("%H:%M")})
    assert response.status_code == 303
    with world.app.app_context():
        assert start_due_updates(db.session) == []
        row = db.session.get(SupporterUpdate, update_id)
        assert row.status == UpdateStatus.SCHEDULED
        row.send_after = utcnow() - timedelta(seconds=1)  # its time comes
        db.session.commit()
        assert start_due_updates(db.session) == [update_id]


def test_each_consenting_signer_gets_one_email_with_merge_fields_and_one_click_unsubscribe(world, mailbox):
    addresses = add_signers(world.app, world.petition_id, 6, name="Zoë{n} Müller")
    # The same mailbox on the other petition gets it once; non-consenting and pending signers never.
    add_signers(world.app, world.other_petition_id, 1)
    add_signers(world.app, world.petition_id, 2, start=50, consent=False)
    add_signers(world.app, world.petition_id, 2, start=60, status="pending")
    with world.app.app_context():
        suppress(db.session, index_of(world.app, addresses[0]), "bounce")
        db.session.commit()
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world, petition_id=""))  # the whole campaign
    assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    _send_all(world.app, update_id)

    received = {recipient_of(m): m for m in mailbox.messages}
    assert sorted(received) == sorted(addresses[1:])
    assert len(mailbox.messages) == 5
    message = received["signer1@example.net"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "We delivered it"
    assert "Hello Zoë1," in text_of(message)
    html = message.get_body(("html",)).get_content()
    assert "<strong>Petition reach-one</strong>" in html and "http://campaign.test/petitions/reach-one" in html
    with world.app.app_context():
        counts = dict(db.session.execute(select(UpdateRecipient.status, func.count())
                                         .group_by(UpdateRecipient.status)).all())
        assert counts == {RecipientStatus.SENT: 5, RecipientStatus.SUPPRESSED: 1}
        assert db.session.get(SupporterUpdate, update_id).status == UpdateStatus.SENT
    progress = client.get(f"/organize/updates/{update_id}/progress").get_json()
    assert progress["sent"] == 5 and progress["suppressed"] == 1 and progress["status"] == "sent"

    # One-click: a POST without cookies or CSRF token unsubscribes; the GET before changes nothing.
    path = unsubscribe_path(message)
    anonymous = world.app.test_client()
    page = anonymous.get(path)
    assert page.status_code == 200 and "Unsubscribe" in page.get_data(as_text=True)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 1
    assert anonymous.post(path).status_code == 200
    assert anonymous.post(path).status_code == 200  # again: no error, nothing new
    with world.app.app_context():
        index = index_of(world.app, "signer1@example.net")
        assert db.session.scalar(select(func.count()).select_from(Suppression).where(
            Suppression.email_index == index, Suppression.campaign_id == world.campaign_id)) == 1
        assert not any(db.session.scalars(select(Signature.consent_updates).where(Signature.email_index == index)))
    assert "You are unsubscribed" in anonymous.get(path).get_data(as_text=True)
    assert anonymous.get(path[:-3] + "abc").status_code == 404  # tampered

    # Honored at once: the next update does not go to that address.
    mailbox.messages.clear()
    second = _update_id(_compose(client, world, petition_id="", subject="Again"))
    assert post_form(client, f"/organize/updates/{second}/send", {"when": "now"}).status_code == 303
    _send_all(world.app, second)
    assert sorted(recipient_of(m) for m in mailbox.messages) == sorted(addresses[2:])


def test_an_unsubscribe_between_writing_the_recipients_and_sending_is_honored(world, mailbox):
    addresses = add_signers(world.app, world.petition_id, 3)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    with world.app.app_context():
        start_due_updates(db.session)
        # A bounce webhook or an unsubscribe lands after the rows were written, before the batch.
        suppress(db.session, index_of(world.app, addresses[1]), "complaint")
        db.session.commit()
        send_batch(db.session, update_id)
    assert sorted(recipient_of(m) for m in mailbox.messages) == [addresses[0], addresses[2]]


def test_pause_stops_sending_and_resume_and_cancel_work(world, mailbox):
    add_signers(world.app, world.petition_id, 30)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    world.app.config["REACH_BATCH_SIZE"] = 10
    with world.app.app_context():
        start_due_updates(db.session)
        assert send_batch(db.session, update_id).sent == 10
    page = f"/organize/updates/{update_id}"
    assert post_form(client, f"{page}/pause", {}, page=page).status_code == 303
    with world.app.app_context():
        result = send_batch(db.session, update_id)
        assert result.claimed == 0 and result.stopped == "paused"
    assert len(mailbox.messages) == 10
    assert post_form(client, f"{page}/resume", {}, page=page).status_code == 303
    with world.app.app_context():
        assert send_batch(db.session, update_id).sent == 10
    assert post_form(client, f"{page}/cancel", {}, page=page).status_code == 303
    with world.app.app_context():
        assert send_batch(db.session, update_id).claimed == 0
        counts = dict(db.session.execute(select(UpdateRecipient.status, func.count())
                                         .group_by(UpdateRecipient.status)).all())
    assert counts == {RecipientStatus.SENT: 20, RecipientStatus.CANCELLED: 10}
    assert len(mailbox.messages) == 20


def test_a_test_send_goes_to_the_organizer_only(world, mailbox):
    add_signers(world.app, world.petition_id, 2)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    with world.app.app_context():
        assert send_test(db.session, update_id, world.organizer_id) == "sent"
    assert [recipient_of(m) for m in mailbox.messages] == [ORGANIZER]
    message = mailbox.messages[0]
    assert message["Subject"] == "[Test] We delivered it"
    assert "Hello Olga," in text_of(message) and "This is a test." in text_of(message)
    with world.app.app_context():
        assert db.session.get(SupporterUpdate, update_id).status == UpdateStatus.DRAFT


def test_unsubscribe_links_refuse_other_purposes_tampering_and_age(world):
    import time as clock

    from itsdangerous import URLSafeTimedSerializer

    from campaign.services.updates import unsubscribe_token

    client = world.app.test_client()
    with world.app.app_context():
        good = unsubscribe_token(world.campaign_id, index_of(world.app, "someone@example.net"))
        # The same payload signed for another purpose (another salt), or with another key.
        other_salt = URLSafeTimedSerializer(world.app.config["SECRET_KEY"], salt="campaign.export-download").dumps(
            {"c": world.campaign_id, "e": "0" * 64})
        other_key = URLSafeTimedSerializer("not-our-key", salt="campaign.unsubscribe").dumps(
            {"c": world.campaign_id, "e": "0" * 64})
    for token in (other_salt, other_key, good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1], "x"):
        assert client.post(f"/unsubscribe/{token}").status_code == 404
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
    world.app.config["UNSUBSCRIBE_TOKEN_MAX_AGE"] = 1
    clock.sleep(2.1)
    assert client.post(f"/unsubscribe/{good}").status_code == 404


def test_a_signer_name_cannot_add_header_lines_through_merge_fields(world, mailbox):
    add_signers(world.app, world.petition_id, 1, name="Eve\r\nBcc: victim@example.org\u2028X-Evil: 1")
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world, subject="News for {{ first_name }}"))
    assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    _send_all(world.app, update_id)
    (message,) = mailbox.messages
    assert message["Subject"] == "News for Eve"
    assert message["Bcc"] is None and message["X-Evil"] is None


def test_erasure_can_forget_a_mailbox_but_keeps_its_suppression(world, mailbox):
    from campaign.services.updates import forget_mailbox

    addresses = add_signers(world.app, world.petition_id, 2)
    client = signed_in(world.app)
    update_id = _update_id(_compose(client, world))
    assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    _send_all(world.app, update_id)
    index = index_of(world.app, addresses[0])
    with world.app.app_context():
        suppress(db.session, index, "unsubscribe", world.campaign_id)
        assert forget_mailbox(db.session, index) == 1
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(UpdateRecipient).where(
            UpdateRecipient.email_index == index)) == 0
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 1


def _two_started_updates(world: World, count: int) -> tuple[list[str], int, int]:
    """count signers and two updates to all of them, both started (recipient rows written)."""
    addresses = add_signers(world.app, world.petition_id, count)
    client = signed_in(world.app)
    first = _update_id(_compose(client, world))
    second = _update_id(_compose(client, world, subject="More news"))
    for update_id in (first, second):
        assert post_form(client, f"/organize/updates/{update_id}/send", {"when": "now"}).status_code == 303
    with world.app.app_context():
        assert sorted(start_due_updates(db.session)) == sorted([first, second])
        db.session.remove()
    return addresses, first, second


def _recipients(app) -> dict[tuple[int, str], tuple[str, str]]:
    with app.app_context():
        return {(r.update_id, r.email_index): (r.status, r.error)
                for r in db.session.scalars(select(UpdateRecipient))}


def test_a_refused_mailbox_is_suppressed_everywhere_and_a_policy_refusal_suppresses_nobody(world, mailbox):
    # The same rules as the outbox (campaign.mail.reasons.refuses_mailbox), through a real SMTP server.
    (gone, spam, *fine), first, second = _two_started_updates(world, 4)
    mailbox.refusals[gone] = "550 5.1.1 no such user"
    mailbox.refusals[spam] = "554 5.7.1 message rejected as spam"
    with world.app.app_context():
        result = send_batch(db.session, first)
        db.session.remove()
    assert (result.sent, result.failed, result.retry) == (2, 2, 0)
    assert sorted(recipient_of(m) for m in mailbox.messages) == sorted(fine)

    gone_index, spam_index = index_of(world.app, gone), index_of(world.app, spam)
    with world.app.app_context():
        suppressions = [(s.email_index, s.reason, s.campaign_id) for s in db.session.scalars(select(Suppression))]
    assert suppressions == [(gone_index, "bounce", None)]  # every campaign; nothing for the 5.7.1
    rows = _recipients(world.app)
    assert rows[(first, gone_index)] == (RecipientStatus.FAILED, "refused 550")
    assert rows[(first, spam_index)] == (RecipientStatus.FAILED, "refused 554")
    # The bounced mailbox's row in the other update is dropped at once, as a bounce report drops it.
    assert rows[(second, gone_index)] == (RecipientStatus.SUPPRESSED, "bounce")
    for address in (spam, *fine):
        assert rows[(second, index_of(world.app, address))] == (RecipientStatus.QUEUED, "")

    # The policy refusal passes; the bounced mailbox is not tried again.
    mailbox.refusals.clear()
    mailbox.messages.clear()
    with world.app.app_context():
        assert send_batch(db.session, second).sent == 1 + len(fine)
    assert sorted(recipient_of(m) for m in mailbox.messages) == sorted([spam, *fine])


def test_the_bounce_suppression_and_the_failed_mark_are_one_transaction(world, mailbox, monkeypatch):
    import campaign.services.updates as updates

    (gone, *_), first, _ = _two_started_updates(world, 2)
    mailbox.refusals[gone] = "550 5.1.1 no such user"

    def broken(session, index, *args):
        raise RuntimeError("the suppression write failed")

    monkeypatch.setattr(updates, "suppress_everywhere", broken)
    with world.app.app_context(), pytest.raises(RuntimeError):
        send_batch(db.session, first)
    # Neither half was written: the row is still claimed (its lease hands it on), nobody suppressed.
    gone_index = index_of(world.app, gone)
    assert _recipients(world.app)[(first, gone_index)][0] == RecipientStatus.SENDING
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
