"""Thin tasks: take ids, call a service, let the service's idempotency make retries safe."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from campaign.extensions import db
from campaign.services.outbox import deliver, sweep

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
def sweep_outbox(follow_up: str | None = None) -> int:
    """Re-publish due rows; a lost or never-published task costs a delay, not an email."""
    try:
        return sweep(db.session, follow_up)
    finally:
        db.session.remove()


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


@shared_task(name="petitions.close_due", ignore_result=True)
def close_due_petitions() -> int:
    """Close published petitions whose closing date has passed (issue 3). Safe to run twice."""
    from campaign.services.organizing import close_due_petitions as close_due

    try:
        closed = close_due(db.session)
        db.session.commit()
    finally:
        db.session.remove()
    log.info("petitions closed at their closing date: %s", closed)
    return closed


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


# --- organizer reach (issue 7) ---------------------------------------------------------------

@shared_task(name="reach.run", ignore_result=True)
def reach_run() -> str:
    """Start supporter updates that are due, restart stalled ones, delete expired export files,
    take back exports whose worker died and publish queued ones again. Safe to run twice at once:
    starting an update and taking back an export are conditional UPDATEs."""
    from campaign.services.exports import delete_expired_exports, take_back_abandoned_exports, waiting_exports
    from campaign.services.updates import stalled_updates, start_due_updates

    try:
        started = start_due_updates(db.session)
        stalled = stalled_updates(db.session)
        expired = delete_expired_exports(db.session)
        # Before waiting_exports, so an export queued again is published in this same run.
        requeued, abandoned = take_back_abandoned_exports(db.session)
        waiting = waiting_exports(db.session)
    finally:
        db.session.remove()
    publish_batches(started, int(current_app.config["REACH_PARALLEL"]))
    publish_batches([i for i in stalled if i not in started], 1)
    for export_id in waiting:
        try:
            current_app.extensions["celery"].send_task("exports.run", args=[export_id], queue="bulk",
                                                       retry=False)
        except Exception as error:  # next run tries again
            log.warning("could not publish export %s: %s", export_id, type(error).__name__)
            break
    return (f"started={len(started)} stalled={len(stalled)} expired_exports={expired} "
            f"requeued_exports={requeued} failed_exports={abandoned} waiting_exports={len(waiting)}")


def publish_batches(update_ids: list[int], copies: int) -> None:
    celery = current_app.extensions["celery"]
    for update_id in update_ids:
        for _ in range(max(copies, 1)):
            try:
                celery.send_task("reach.send", args=[update_id], queue="bulk", retry=False)
            except Exception as error:  # the reach job re-publishes a stalled update
                log.warning("could not publish update %s: %s", update_id, type(error).__name__)
                return


@shared_task(name="reach.send", ignore_result=True)
def reach_send(update_id: int) -> str:
    """Send one batch of a supporter update over one SMTP connection, then hand the next batch to
    a fresh task (so other queued work gets a turn and a pause is seen between batches)."""
    from campaign.services.updates import send_batch

    try:
        result = send_batch(db.session, update_id)
    finally:
        db.session.remove()
    log.info("update %s: batch claimed=%s sent=%s failed=%s suppressed=%s retry=%s stopped=%s",
             update_id, result.claimed, result.sent, result.failed, result.suppressed, result.retry,
             result.stopped or "-")
    if result.more and result.claimed and not result.stopped:
        publish_batches([update_id], 1)
    return f"sent={result.sent}"


@shared_task(name="reach.test_send", ignore_result=True)
def reach_test_send(update_id: int, user_id: int) -> str:
    from campaign.services.updates import send_test

    try:
        return send_test(db.session, update_id, user_id)
    finally:
        db.session.remove()


@shared_task(name="exports.run", ignore_result=True)
def export_run(export_id: int) -> str:
    from campaign.services.exports import run_export

    try:
        outcome = run_export(db.session, export_id)
    finally:
        db.session.remove()
    log.info("export %s: %s", export_id, outcome)
    return outcome


@shared_task(name="reminders.run", ignore_result=True)
def run_reminders() -> int:
    """Issue 5: queue the one reminder to signers who have not confirmed after a day."""
    from campaign.services.supporters import queue_reminders

    try:
        queued = queue_reminders(db.session)
        db.session.commit()
    finally:
        db.session.remove()
    log.info("reminders queued: %s", queued)
    return queued
