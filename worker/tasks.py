"""Thin tasks: take ids, call a service, let the service's idempotency make retries safe."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from campaign.extensions import db
from campaign.services.outbox import deliver, due_emails, fail_abandoned, queue_for

log = logging.getLogger(__name__)


@shared_task(name="outbox.send", ignore_result=True)
def send_email(email_id: int) -> str:
    try:
        outcome = deliver(db.session, email_id)
    finally:
        db.session.remove()
    # Ids and outcomes only: the line carries the request id of the request that queued it.
    log.info("email %s: %s", email_id, outcome)
    return outcome


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


@shared_task(name="abuse.trending", ignore_result=True)
def trending_alerts() -> int:
    """Alert organizers about addresses and domains signing one petition too fast (issue 6)."""
    from campaign.services.abuse import detect_trending

    try:
        raised = detect_trending(db.session)
        db.session.commit()
    finally:
        db.session.remove()
    for alert in raised:
        log.info("trending alert %s: petition %s, %s, %s signatures in an hour",
                 alert.id, alert.petition_id, alert.kind, alert.count)
    return len(raised)


@shared_task(name="privacy.retention", ignore_result=True)
def retention() -> str:
    """Drop old IP hashes, delete old unconfirmed signatures, anonymize closed petitions."""
    from campaign.services.retention import run_retention

    try:
        report = run_retention(db.session)
    finally:
        db.session.remove()
    log.info("retention: %s", report)
    return str(report)


@shared_task(name="deliveries.run", ignore_result=True)
def run_deliveries() -> str:
    """Mail to officials (issue 4): route what nothing routed yet, make the batched deliveries
    that are due, watch for failing targets, refresh the public figures; then tell signers about
    leaders' answers, a chunk per transaction. Safe to run twice at once."""
    from campaign.services.deliveries import run_mailings
    from campaign.services.responses import notify_responses

    notified = 0
    try:
        result = run_mailings(db.session)
        db.session.commit()
        for _ in range(20):
            queued = notify_responses(db.session)
            db.session.commit()
            notified += queued
            if not queued:
                break
    finally:
        db.session.remove()
    summary = (f"deliveries={len(result.deliveries)} routed={result.routed} warned={result.warned} "
               f"notified={notified}")
    log.info("deliveries: %s", summary)
    return summary


@shared_task(name="webhooks.send", ignore_result=True)
def send_webhook(call_id: int) -> str:
    """One webhook call (issue 8); the claim makes a second run of the same task a no-op."""
    from campaign.services.webhooks import send_call

    try:
        outcome = send_call(db.session, call_id)
    finally:
        db.session.remove()
    log.info("webhook call %s: %s", call_id, outcome)
    return outcome


@shared_task(name="webhooks.sweep", ignore_result=True)
def sweep_webhooks() -> int:
    """Publish webhook calls that are due (retries) or whose worker died; forget old log rows."""
    from campaign.services.webhooks import due_calls, forget_old_calls, publish

    try:
        forget_old_calls(db.session)
        db.session.commit()
        due = due_calls(db.session, limit=int(current_app.config["OUTBOX_SWEEP_BATCH"]))
    finally:
        db.session.remove()
    for call_id in due:
        publish(call_id)
    return len(due)
