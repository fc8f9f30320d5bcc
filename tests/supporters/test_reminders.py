"""The one reminder (issue 5): a signer still pending 24 hours after signing gets one, driven by
beat over rows; never to held, invalidated, deleted or confirmed signatures, never twice, and
never past the per-address cap."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from campaign.extensions import db
from campaign.models import OutboundEmail, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.supporters import queue_reminders
from tests.support import confirm, confirm_path, deliver_due
from tests.supporters.conftest import messages_to, my_data_path, sign_in


def _run(app, hours: float) -> int:
    with app.app_context():
        queued = queue_reminders(db.session, now=utcnow() + timedelta(hours=hours))
        db.session.commit()
        return queued


def _reminders(app) -> list[OutboundEmail]:
    with app.app_context():
        return list(db.session.scalars(select(OutboundEmail).where(OutboundEmail.kind == "signature_reminder")))


def test_one_reminder_after_a_day_and_never_a_second(app, client, demo, mailbox):
    sign_in(client, email="late@example.com", name="Late Signer")
    deliver_due(app)
    assert _run(app, 23) == 0  # not yet
    assert _run(app, 25) == 1
    assert _run(app, 26) == 0 and _run(app, 48) == 0  # at most one, however often beat runs
    deliver_due(app)
    message = [m for m in messages_to(mailbox, "late@example.com")
               if m["Subject"] == "Your signature is not confirmed yet"]
    assert len(message) == 1
    assert my_data_path(message[0])
    # Its link confirms like the first email's.
    assert confirm(client, confirm_path(message[0])).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Signature.status)) == SignatureStatus.CONFIRMED


def test_no_reminder_for_held_invalidated_confirmed_deleted_or_old(app, client, demo, mailbox):
    for address in ("held@example.com", "invalid@example.com", "confirmed@example.com", "deleted@example.com",
                    "old@example.com"):
        sign_in(client, email=address)
    deliver_due(app)
    confirm(client, confirm_path(messages_to(mailbox, "confirmed@example.com")[0]))
    with app.app_context():
        db.session.execute(update(Signature).where(Signature.id == 1).values(status=SignatureStatus.HELD))
        db.session.execute(update(Signature).where(Signature.id == 2).values(status=SignatureStatus.INVALIDATED))
        db.session.delete(db.session.get(Signature, 4))
        db.session.execute(update(Signature).where(Signature.id == 5)
                           .values(created_at=utcnow() - timedelta(days=30)))
        db.session.commit()
    assert _run(app, 25) == 0
    assert _reminders(app) == []


def test_a_reminder_stays_inside_the_per_address_cap(make_app, mailbox):
    from campaign.services.demo import seed_demo

    app = make_app(EMAILS_PER_ADDRESS_PER_PETITION=2)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    sign_in(client, email="capped@example.com")
    sign_in(client, email="capped@example.com")  # 2 of 2 form emails for this petition
    assert _run(app, 25) == 0
    with app.app_context():
        assert db.session.scalar(select(Signature.reminded_at)) is not None  # skipped for good
    assert _reminders(app) == []


def test_a_reminder_cancels_itself_if_the_signer_confirms_first(app, client, demo, mailbox):
    sign_in(client, email="quick@example.com")
    assert _run(app, 25) == 1
    with app.app_context():
        db.session.execute(update(Signature).values(status=SignatureStatus.CONFIRMED))
        db.session.commit()
    assert deliver_due(app).get("cancelled", 0) >= 1
    assert [m for m in messages_to(mailbox, "quick@example.com")
            if m["Subject"] == "Your signature is not confirmed yet"] == []


def test_reminder_in_the_signers_language(app, client, demo, mailbox):
    sign_in(client, "/ru/petitions/g20-chechnya", email="ru@example.com", name="Хава")
    assert _run(app, 25) == 1
    deliver_due(app)
    subjects = [m["Subject"] for m in messages_to(mailbox, "ru@example.com")]
    assert "Ваша подпись ещё не подтверждена" in subjects and "Пожалуйста, подтвердите подпись" in subjects


def test_beat_schedules_the_reminder_job(app):
    from campaign.queue import _celery_config

    schedule = _celery_config(app)["beat_schedule"]
    assert schedule["reminders-run"]["task"] == "reminders.run"
