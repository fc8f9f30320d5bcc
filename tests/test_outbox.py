"""The outbox: each row sent at most once, temporary failures retried, permanent ones final."""

from __future__ import annotations

import smtplib
from datetime import timedelta
from email.utils import getaddresses

import pytest
from flask_mail import Message
from sqlalchemy import select, update

from campaign.extensions import db
from campaign.mail import sender
from campaign.mail.reasons import refuses_mailbox
from campaign.mail.sender import PermanentFailure, send_message
from campaign.models import OutboundEmail, OutboxStatus, Signature, Suppression
from campaign.models.base import utcnow
from campaign.services.outbox import backoff_seconds, deliver
from tests.support import deliver_due, sign


def _row(app) -> OutboundEmail:
    with app.app_context():
        row = db.session.query(OutboundEmail).one()
        db.session.expunge(row)
        return row


def test_a_row_is_sent_once_however_often_it_is_delivered(client, demo, app, mailbox):
    sign(client)
    row = _row(app)
    with app.app_context():
        outcomes = [deliver(db.session, row.id) for _ in range(5)]
    assert outcomes == ["sent", "skipped", "skipped", "skipped", "skipped"]
    assert len(mailbox.messages) == 1
    sent = _row(app)
    assert sent.status == OutboxStatus.SENT and sent.attempts == 1 and sent.sent_at is not None


def test_temporary_failure_is_retried_later_with_backoff(client, demo, app, mailbox):
    sign(client)
    mailbox.refusals["*"] = "421 4.7.0 try again later"
    assert deliver_due(app) == {"retry": 1}
    row = _row(app)
    assert row.status == OutboxStatus.QUEUED and row.attempts == 1
    assert "421" in row.last_error
    assert row.next_attempt_at > utcnow()
    assert deliver_due(app) == {}  # not due yet
    mailbox.refusals.clear()
    with app.app_context():
        db.session.execute(update(OutboundEmail).values(next_attempt_at=utcnow()))
        db.session.commit()
    assert deliver_due(app) == {"sent": 1}
    assert len(mailbox.messages) == 1


def test_permanent_failure_is_not_retried(client, demo, app, mailbox):
    sign(client, email="gone@example.com")
    mailbox.refusals["gone@example.com"] = "550 5.1.1 no such user"
    assert deliver_due(app) == {"failed": 1}
    row = _row(app)
    assert row.status == OutboxStatus.FAILED and "550" in row.last_error
    with app.app_context():
        db.session.execute(update(OutboundEmail).values(next_attempt_at=utcnow() - timedelta(days=1)))
        db.session.commit()
    assert deliver_due(app) == {}
    assert mailbox.messages == []


def _suppressions(app) -> list[tuple[str, str, int | None]]:
    with app.app_context():
        return [(r.email_index, r.reason, r.campaign_id) for r in db.session.scalars(select(Suppression))]


def test_a_refused_mailbox_is_suppressed_with_the_failed_row_and_gets_no_more_mail(
        client, demo, app, mailbox):
    sign(client, email="gone@example.com")
    mailbox.refusals["gone@example.com"] = "550 5.1.1 no such user"
    assert deliver_due(app) == {"failed": 1}
    row = _row(app)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1 and row.reason == "recipient_refused"
    # A hard bounce for every campaign, under the blind index the row carries (never the address).
    assert _suppressions(app) == [(row.recipient_index, "bounce", None)]

    # Signing again with the bounced address: the confirmation is not sent (it would bounce
    # again) and says why; an address that merely unsubscribed would still get it.
    mailbox.refusals.clear()
    sign(client, email="gone@example.com")
    assert deliver_due(app) == {"cancelled": 1}
    with app.app_context():
        again = db.session.scalars(select(OutboundEmail).order_by(OutboundEmail.id.desc())).first()
        assert again is not None and again.reason == "bounced" and again.attempts == 1
    assert mailbox.messages == []
    sign(client, email="other@example.com")
    assert deliver_due(app) == {"sent": 1}


def test_a_policy_refusal_fails_the_row_but_suppresses_nobody(client, demo, app, mailbox):
    # 5.7.x is about us or the message (relay denied, spam): suppressing would punish the signer.
    sign(client, email="fine@example.com")
    mailbox.refusals["fine@example.com"] = "554 5.7.1 relay access denied"
    assert deliver_due(app) == {"failed": 1}
    row = _row(app)
    assert row.status == OutboxStatus.FAILED and row.reason == "message_refused"
    assert _suppressions(app) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded_app(request, make_app):
    """The demo on SQLite or on PostgreSQL (where the outcome after SMTP starts in autocommit)."""
    from campaign.services.demo import seed_demo

    app = make_app() if request.param == "sqlite" else request.getfixturevalue("make_pg_app")()
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return app


def test_the_suppression_and_the_failed_mark_are_one_transaction(seeded_app, mailbox, monkeypatch):
    import campaign.services.outbox as outbox

    app = seeded_app
    sign(app.test_client(), email="gone@example.com")
    mailbox.refusals["gone@example.com"] = "550 5.1.1 no such user"

    def broken(session, index):
        raise RuntimeError("the suppression write failed")

    monkeypatch.setattr(outbox, "suppress_everywhere", broken)
    with app.app_context(), pytest.raises(RuntimeError):
        deliver(db.session, _row(app).id)
    # Neither half was written: the row is still claimed, nobody suppressed.
    row = _row(app)
    assert row.status == OutboxStatus.SENDING and row.last_error == ""
    assert _suppressions(app) == []
    monkeypatch.undo()
    with app.app_context():
        db.session.execute(update(OutboundEmail).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert deliver_due(app) == {"failed": 1}  # the sweep's retry gets the 550 again and records both
    assert _row(app).status == OutboxStatus.FAILED
    assert [reason for _, reason, _ in _suppressions(app)] == ["bounce"]


@pytest.mark.parametrize(("code", "text", "at_rcpt", "mailbox"), [
    (550, "5.1.1 no such user", True, True),
    (550, b"5.1.1 <a@b.example>: user unknown", False, True),  # refused after DATA
    (552, "5.2.1 mailbox disabled", True, True),
    (550, "mailbox unavailable", True, True),
    (550, "mailbox unavailable", False, False),  # after DATA without a code: maybe the content
    (554, "5.7.1 relay access denied", True, False),
    (550, "5.7.1 message rejected as spam", False, False),
    (554, "transaction failed", True, False),
    (450, "4.2.2 mailbox full", True, False),
])
def test_which_refusals_are_hard_bounces(code, text, at_rcpt, mailbox):
    assert refuses_mailbox(code, text, at_rcpt) is mailbox


@pytest.mark.parametrize(("error", "mailbox", "reason"), [
    (smtplib.SMTPRecipientsRefused({"a@b.example": (550, b"5.1.1 no such user")}), True, "recipient_refused"),
    (smtplib.SMTPRecipientsRefused({"a@b.example": (554, b"5.7.1 relay denied")}), False, "message_refused"),
    (smtplib.SMTPDataError(550, b"5.1.1 user unknown"), True, "recipient_refused"),
    (smtplib.SMTPDataError(554, b"5.7.1 spam"), False, "message_refused"),
    (smtplib.SMTPSenderRefused(550, b"5.1.1 no such sender", "x@y.example"), False, "message_refused"),
])
def test_the_sender_says_which_permanent_failures_are_about_the_mailbox(app, monkeypatch, error, mailbox,
                                                                         reason):
    def refuse(state, message):
        raise error

    monkeypatch.setattr(sender, "_send", refuse)
    with app.app_context(), pytest.raises(PermanentFailure) as caught:
        send_message(Message("s", recipients=["a@b.example"], body="b", sender="x@y.example"))
    assert caught.value.mailbox is mailbox and caught.value.reason == reason


def test_gives_up_after_the_configured_attempts(make_app, mailbox):
    app = make_app(OUTBOX_MAX_ATTEMPTS=3)
    from campaign.services.demo import seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    sign(app.test_client())
    mailbox.refusals["*"] = "451 4.3.0 busy"
    outcomes = []
    for _ in range(4):
        with app.app_context():
            db.session.execute(update(OutboundEmail).values(next_attempt_at=utcnow()))
            db.session.commit()
        outcomes.append(deliver_due(app))
    assert outcomes == [{"retry": 1}, {"retry": 1}, {"failed": 1}, {}]
    assert _row(app).attempts == 3


def test_an_abandoned_claim_is_taken_over_after_its_lease(client, demo, app, mailbox):
    sign(client)
    row = _row(app)
    with app.app_context():
        # A worker claimed the row and died before sending.
        db.session.execute(update(OutboundEmail).values(
            status=OutboxStatus.SENDING, attempts=1, lease_until=utcnow() + timedelta(minutes=5)))
        db.session.commit()
        assert deliver(db.session, row.id) == "skipped"  # lease still running
        db.session.execute(update(OutboundEmail).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert deliver(db.session, row.id) == "sent"
    assert len(mailbox.messages) == 1
    assert _row(app).attempts == 2


def test_email_no_longer_wanted_is_cancelled(client, demo, app, mailbox):
    sign(client)
    with app.app_context():
        db.session.execute(update(Signature).values(status="invalidated"))
        db.session.commit()
    assert deliver_due(app) == {"cancelled": 1}
    assert mailbox.messages == []


def test_line_breaks_in_a_name_cannot_add_headers(client, demo, app, mailbox):
    response = sign(client, name="Eve\r\nBcc: victim@example.com")
    assert response.status_code == 400  # refused at the form
    sign(client, name="Eve\u2028Bcc: victim@example.com")
    deliver_due(app)
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["Bcc"] is None
    assert [address for _, address in getaddresses([str(message["To"])])] == ["ada@example.com"]


def test_backoff_grows_and_has_jitter():
    gaps = [backoff_seconds(n, 30, 3600) for n in range(1, 9)]
    assert 15 <= gaps[0] <= 30
    assert max(gaps) <= 3600
    samples = {round(backoff_seconds(4, 30, 3600), 3) for _ in range(20)}
    assert len(samples) > 1  # jitter: not all equal
    assert min(backoff_seconds(6, 30, 3600) for _ in range(20)) > max(backoff_seconds(2, 30, 3600) for _ in range(20))


def test_a_message_that_kills_its_worker_every_time_ends_as_failed(client, demo, app, mailbox):
    from campaign.services.outbox import fail_abandoned

    sign(client)
    row = _row(app)
    with app.app_context():
        db.session.execute(update(OutboundEmail).values(
            status=OutboxStatus.SENDING, attempts=app.config["OUTBOX_MAX_ATTEMPTS"],
            lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert deliver(db.session, row.id) == "skipped"
        assert fail_abandoned(db.session) == 1
    assert _row(app).status == OutboxStatus.FAILED
    assert mailbox.messages == []


def test_a_worker_that_outlived_its_lease_cannot_overwrite_the_new_claim(client, demo, app, mailbox):
    from campaign.services.outbox import Claimed, _finish, claim

    sign(client)
    row_id = _row(app).id
    with app.app_context():
        stale = claim(db.session, row_id)
        assert stale is not None
        db.session.expunge(stale)
        # Its lease runs out and another worker claims the row.
        db.session.execute(update(OutboundEmail).values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        fresh = claim(db.session, row_id)
        assert fresh is not None and fresh.attempts == 2
        _finish(db.session, Claimed.of(stale), OutboxStatus.FAILED, "stale worker")
    row = _row(app)
    assert row.status == OutboxStatus.SENDING and row.last_error == ""
