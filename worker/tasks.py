"""Thin tasks: take ids, call a service, let the service's idempotency make retries safe."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from campaign.extensions import db
from campaign.services.outbox import deliver, due_emails, fail_abandoned, queue_for


@shared_task(name="outbox.send", ignore_result=True)
def send_email(email_id: int) -> str:
    try:
        return deliver(db.session, email_id)
    finally:
        db.session.remove()


@shared_task(name="outbox.sweep", ignore_result=True)
def sweep_outbox() -> int:
    """Re-publish due rows; a lost or never-published task costs a delay, not an email."""
    try:
        fail_abandoned(db.session)
        due = due_emails(db.session, limit=int(current_app.config["OUTBOX_SWEEP_BATCH"]),
                         grace=float(current_app.config["OUTBOX_SWEEP_GRACE"]))
    finally:
        db.session.remove()
    publish = current_app.extensions["campaign.publish"]
    for email_id, kind in due:
        publish(email_id, queue_for(kind))
    return len(due)
