"""The outbox: queue emails in the caller's transaction, hand them to workers after commit,
and send each row at most once per idempotency key.

A row moves queued -> sending (claimed with a conditional UPDATE and a lease) -> sent, or back to
queued with a later next_attempt_at after a temporary failure, or to failed/cancelled. The sweep
re-publishes rows that are due or whose lease ran out, so a lost broker message delays an email
but never loses it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import Table, and_, bindparam, event, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from campaign.mail.messages import Draft, build_message
from campaign.mail.reasons import scrub_error
from campaign.mail.sender import PermanentFailure, TemporaryFailure, send_message
from campaign.models import OutboundEmail, OutboxStatus, Petition
from campaign.models.base import utcnow
from campaign.services.bounces import suppress_everywhere
from campaign.services.killswitch import switches
from campaign.services.suppression import is_index_bounced, is_supporter_mail, outbox_row_suppressed
from campaign.services.types import DbSession

log = logging.getLogger(__name__)

# Signers wait for these; letters and bulk mail must never hold them up.
QUEUES = {"signature_confirmation": "confirmations", "signature_already_confirmed": "confirmations",
          # Mail to officials has its own queue: a mass delivery never delays a confirmation.
          "letter_to_target": "letters", "delivery_to_target": "letters"}
DEFAULT_QUEUE = "bulk"

_PENDING = "campaign.outbox.new"

# kind -> function(session, row) returning a Draft, or None when the email is no longer wanted.
Builder = Callable[[DbSession, OutboundEmail], Draft | None]
_builders: dict[str, Builder] = {}


def message_kind(kind: str) -> Callable[[Builder], Builder]:
    """Register the builder for a kind of email."""
    def register(builder: Builder) -> Builder:
        _builders[kind] = builder
        return builder
    return register


def queue_for(kind: str) -> str:
    return QUEUES.get(kind, DEFAULT_QUEUE)


def queue_email(session: DbSession, *, kind: str, key: str, **refs: Any) -> OutboundEmail | None:
    """Add an outbox row in the caller's transaction; it is published once that commits.

    Returns None, and writes nothing, when a row with this idempotency key already exists.
    """
    if kind not in _builders:
        raise ValueError(f"no message builder for {kind!r}")
    row = OutboundEmail(idempotency_key=key, kind=kind, **refs)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    session.info.setdefault(_PENDING, []).append((row.id, kind))
    return row


@functools.lru_cache(maxsize=4)
def _insert_once_statement(dialect: str) -> Any:
    # Built once per dialect on the Core table; each call's parameters are the VALUES (issue 9).
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = cast(Table, OutboundEmail.__table__)
    return (insert(table).on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(table.c.id))


def queue_email_once(session: DbSession, *, kind: str, key: str, **refs: Any) -> int | None:
    """queue_email for the hot path: one INSERT ... ON CONFLICT (idempotency key) DO NOTHING
    RETURNING id, no savepoint and no ORM object. Returns the new row's id, or None (and writes
    nothing) when a row with this key exists. Published after commit like any other row."""
    if kind not in _builders:
        raise ValueError(f"no message builder for {kind!r}")
    email_id = session.execute(_insert_once_statement(session.get_bind().dialect.name),
                               {"idempotency_key": key, "kind": kind, **refs}).scalar()
    if email_id is None:
        return None
    session.info.setdefault(_PENDING, []).append((int(email_id), kind))
    return int(email_id)


_installed = False


def install_dispatch(session_factory: Any) -> None:
    """After each commit, publish the rows that the transaction queued; forget them on rollback.

    Installed once per process; the publisher is the current app's, so every app (and test)
    created in the process publishes through its own broker.
    """
    global _installed
    if _installed:
        return
    _installed = True

    @event.listens_for(session_factory, "after_commit")
    def _after_commit(session: DbSession) -> None:
        # SQLAlchemy fires after_commit for a savepoint's release too: publishing then would let
        # a worker look for rows the outer transaction has not committed (they would be skipped
        # and left to the sweep). Only the outermost commit publishes.
        if cast(Session, session).in_nested_transaction():
            return
        pending = session.info.pop(_PENDING, [])
        if pending:
            publish = current_app.extensions["campaign.publish"]
            for email_id, kind in pending:
                publish(email_id, queue_for(kind))

    @event.listens_for(session_factory, "after_soft_rollback")
    def _after_soft_rollback(session: DbSession, previous_transaction: Any) -> None:
        # Only the outermost rollback discards the queue; a savepoint's rollback does not.
        if previous_transaction.parent is None and previous_transaction.nested is False:
            session.info.pop(_PENDING, None)


def due_emails(session: DbSession, limit: int, grace: float = 0.0) -> list[tuple[int, str]]:
    """Rows ready to send: queued and due, or claimed by a worker whose lease ran out.

    grace leaves alone rows that became due only moments ago: their task is most likely still
    on its way through the broker.
    """
    now = utcnow() - timedelta(seconds=grace)
    query = select(OutboundEmail.id, OutboundEmail.kind).where(
        _claimable(now, int(current_app.config["OUTBOX_MAX_ATTEMPTS"])))
    paused = switches(session).paused_queues()
    if paused:
        # Kill switch: paused queues' rows stay queued until an admin lets them go.
        query = query.where(OutboundEmail.kind.in_([k for k in _builders if queue_for(k) not in paused]))
    rows = session.execute(
        query
        .order_by(OutboundEmail.next_attempt_at)
        .limit(limit))
    return [(row.id, row.kind) for row in rows]


def sweep(session: DbSession, follow_up: str | None = None) -> int:
    """The outbox.sweep task: fail what died on every attempt, re-publish what is due. Returns
    how many rows it published.

    With Redis each queue is topped up to OUTBOX_SWEEP_BATCH waiting tasks. While a queue has
    more due rows than that, a follow-up sweep of that queue alone is published into the queue
    behind the rows' tasks: it runs when the workers have reached it, so after a broker outage
    the backlog goes at the workers' pace instead of a batch per beat tick, without a broker
    countdown (RELIABILITY.md A6) and without polling."""
    config = current_app.config
    broker = current_app.extensions["campaign.broker"]
    batch = int(config["OUTBOX_SWEEP_BATCH"])

    fail_abandoned(session)  # commits: no transaction is open below until take_due's
    # Read outside a transaction: a slow or absent Redis must not hold rows locked.
    queues = {queue_for(kind) for kind in _builders} if follow_up is None else {follow_up}
    rooms = {queue: batch - (broker.depth(queue) or 0) for queue in queues}
    due, more = take_due(session, rooms, grace=float(config["OUTBOX_SWEEP_GRACE"]))
    publish = current_app.extensions["campaign.publish"]
    for email_id, kind in due:
        publish(email_id, queue_for(kind))
    if config["OUTBOX_SWEEP_FOLLOW_UP"]:
        hold = 2 * float(config["OUTBOX_SWEEP_INTERVAL"])
        for queue in sorted(more):
            if broker.hold_follow_up(queue, hold, renew=queue == follow_up):
                current_app.extensions["celery"].send_task("outbox.sweep", kwargs={"follow_up": queue},
                                                           queue=queue, retry=False)
    return len(due)


def take_due(session: DbSession, room: dict[str, int],
             grace: float) -> tuple[list[tuple[int, str]], set[str]]:
    """The sweep's share of due rows, marked as published now; and the queues that had more due
    rows than room.

    room says how many tasks each queue can take now (the sweep's batch less what already waits
    in it; a queue not named gets none). A row the sweep published is not taken again for
    `grace` seconds: its task may still be waiting in the queue, and after an outage the queue is
    long (RELIABILITY.md A2: the sweep handed out 500 rows per 15 s, with the old ones again each
    time, and that, not the workers, set how fast the backlog went)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    max_attempts = int(current_app.config["OUTBOX_MAX_ATTEMPTS"])
    paused = switches(session).paused_queues()
    by_queue: dict[str, list[str]] = {}
    for kind in _builders:
        by_queue.setdefault(queue_for(kind), []).append(kind)
    taken: list[tuple[int, str]] = []
    more: set[str] = set()
    for queue, kinds in sorted(by_queue.items()):
        limit = room.get(queue, 0)
        if queue in paused or limit <= 0:
            continue
        # SKIP LOCKED: two sweeps at once (beat's and a follow-up) take different rows.
        picked = (select(OutboundEmail.id)
                  .where(_claimable(cutoff, max_attempts), OutboundEmail.kind.in_(kinds),
                         or_(OutboundEmail.swept_at.is_(None), OutboundEmail.swept_at <= cutoff))
                  .order_by(OutboundEmail.next_attempt_at)
                  .limit(limit)
                  .with_for_update(skip_locked=True))
        rows = session.execute(
            update(OutboundEmail)
            .where(OutboundEmail.id.in_(picked.scalar_subquery()))
            .values(swept_at=now)
            .returning(OutboundEmail.id, OutboundEmail.kind)
            .execution_options(synchronize_session=False)).all()
        taken += [(row.id, row.kind) for row in rows]
        if len(rows) >= limit:
            more.add(queue)
    session.commit()
    return taken, more


def _claimable(now: Any, max_attempts: Any) -> Any:
    """Values or bound parameters. An abandoned claim is taken over only while attempts remain:
    a message that kills its worker every time must end, not loop (fail_abandoned marks it failed)."""
    return or_(
        and_(OutboundEmail.status == OutboxStatus.QUEUED, OutboundEmail.next_attempt_at <= now),
        and_(OutboundEmail.status == OutboxStatus.SENDING, OutboundEmail.lease_until < now,
             OutboundEmail.attempts < max_attempts),
    )


def fail_abandoned(session: DbSession) -> int:
    """Mark failed the rows whose worker died on every allowed attempt. Returns how many."""
    result = session.execute(
        update(OutboundEmail)
        .where(OutboundEmail.status == OutboxStatus.SENDING, OutboundEmail.lease_until < utcnow(),
               OutboundEmail.attempts >= int(current_app.config["OUTBOX_MAX_ATTEMPTS"]))
        .values(status=OutboxStatus.FAILED, lease_until=None,
                last_error="the worker stopped while sending, on every attempt", reason="worker_stopped")
        .execution_options(synchronize_session=False))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


@functools.cache
def _claim_statement() -> Any:
    # Built once (issue 9): building it per email cost more than half of what running it did.
    return (update(OutboundEmail)
            .where(OutboundEmail.id == bindparam("email_id"),
                   _claimable(bindparam("now"), bindparam("max_attempts")))
            .values(status=OutboxStatus.SENDING, attempts=OutboundEmail.attempts + 1,
                    lease_until=bindparam("lease"))
            .execution_options(synchronize_session=False))


def claim(session: DbSession, email_id: int) -> OutboundEmail | None:
    """Take the row for this worker with one conditional UPDATE; None if someone else has it."""
    now = utcnow()
    lease = now + timedelta(seconds=int(current_app.config["OUTBOX_LEASE_SECONDS"]))
    result = session.execute(_claim_statement(), {
        "email_id": email_id, "now": now, "lease": lease,
        "max_attempts": int(current_app.config["OUTBOX_MAX_ATTEMPTS"])})
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(OutboundEmail, email_id, populate_existing=True)


def deliver(session: DbSession, email_id: int) -> str:
    """Send one outbox row if it is due and still wanted. Safe to call any number of times.

    Returns what happened: skipped (not claimable), sent, cancelled, retry or failed.
    Commits its own transactions: the claim before SMTP, the outcome after.
    Returns paused, leaving the row queued, while an admin's kill switch holds its queue.
    """
    paused = switches(session).paused_queues()
    if paused:
        kind = session.scalar(select(OutboundEmail.kind).where(OutboundEmail.id == email_id))
        if kind is not None and queue_for(kind) in paused:
            session.rollback()
            return "paused"
    row = claim(session, email_id)
    if row is None:
        return "skipped"
    held = Claimed.of(row)
    suppressed = _suppressed(session, row)
    if suppressed:
        return _finish(session, held, OutboxStatus.CANCELLED, "recipient suppressed", suppressed)
    builder = _builders.get(row.kind)
    draft = builder(session, row) if builder else None
    if draft is None:
        return _finish(session, held, OutboxStatus.CANCELLED, "no longer wanted", "not_needed")
    kind = row.kind
    try:
        message = build_message(draft, current_app.config["MAIL_DEFAULT_SENDER"])
        _before_smtp(session, held)
        _crash_point("before_smtp")
        send_message(message)
        _crash_point("after_smtp")
    except TemporaryFailure as error:
        return _retry_later(session, held, str(error), error.reason)
    except PermanentFailure as error:
        index = held.recipient_index
        if error.mailbox and index is not None:
            # A hard bounce at the door: the address is suppressed in the transaction that marks
            # the row failed, as a bounce report would (officials' letters have no index: their
            # refusals show in the ledger instead).
            return _finish(session, held, OutboxStatus.FAILED, str(error), error.reason,
                           also=lambda s: suppress_everywhere(s, index))
        return _finish(session, held, OutboxStatus.FAILED, str(error), error.reason)
    except ValueError as error:
        # A message the email package would not write (e.g. a refused header).
        return _finish(session, held, OutboxStatus.FAILED, str(error), "bad_message")
    outcome = _finish(session, held, OutboxStatus.SENT, "")
    _after_sent(session, held.id, kind)
    return outcome


@dataclass
class Claimed:
    """What the outcome write needs from a claimed row, read once: a commit expires the row, and
    a reload could read the lease of another worker that has taken it over since."""
    id: int
    lease_until: datetime | None
    attempts: int
    recipient_index: str | None
    # The session holds a connection in autocommit for the outcome (_before_smtp).
    autocommit: bool = False

    @classmethod
    def of(cls, row: OutboundEmail) -> Claimed:
        return cls(row.id, row.lease_until, row.attempts, row.recipient_index)


def _before_smtp(session: DbSession, held: Claimed) -> None:
    """End the builder's transaction before SMTP, and on PostgreSQL hold a connection in
    autocommit for the outcome.

    Between the server's 250 and the commit of "sent", a crash sends the email twice
    (RELIABILITY.md A1, the documented gap): with the outcome as one autocommitted statement on a
    connection already held, that stretch is one round trip instead of an UPDATE and a COMMIT.
    On SQLite the builder's transaction began IMMEDIATE, so committing it here also stops the
    relay holding the database's write lock while it talks to the SMTP server."""
    session.commit()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        held.autocommit = True


# kind -> function(session, email id) run once the row is recorded sent (e.g. webhooks, issue 8).
SentHook = Callable[[DbSession, int], None]
_sent_hooks: dict[str, SentHook] = {}


def after_sent(kind: str) -> Callable[[SentHook], SentHook]:
    """Register what to do, in a transaction of its own, after an email of this kind was sent."""
    def register(hook: SentHook) -> SentHook:
        _sent_hooks[kind] = hook
        return hook
    return register


def _after_sent(session: DbSession, email_id: int, kind: str) -> None:
    hook = _sent_hooks.get(kind)
    if hook is None:
        return
    try:
        hook(session, email_id)
        session.commit()
    except Exception:  # the email is sent and recorded; a hook's failure must not undo that
        session.rollback()
        log.exception("after-sent hook for email %s failed", email_id)


def _suppressed(session: DbSession, row: OutboundEmail) -> str:
    """Why the row must not be sent ("suppressed", "bounced"), or "" when it may go.

    Supporter mail to an address on the suppression list (blind index) is never sent; the sign
    form's own emails are not sent to a mailbox that hard-bounced."""
    if row.recipient_index is None:
        return ""
    if not is_supporter_mail(row):
        return "bounced" if is_index_bounced(session, row.recipient_index) else ""
    campaign_id = None
    if row.petition_id is not None:
        campaign_id = session.scalar(select(Petition.campaign_id).where(Petition.id == row.petition_id))
    return "suppressed" if outbox_row_suppressed(session, row, campaign_id) else ""


def _finish(session: DbSession, held: Claimed, status: OutboxStatus, error: str,
            reason: str = "", also: Callable[[DbSession], None] | None = None) -> str:
    now = utcnow()
    # Scrubbed: an SMTP reply may quote the recipient's address or a token.
    _record(session, held, also, status=status, lease_until=None, last_error=scrub_error(error),
            reason=reason, sent_at=now if status == OutboxStatus.SENT else None)
    return {OutboxStatus.SENT: "sent", OutboxStatus.CANCELLED: "cancelled"}.get(status, "failed")


def _retry_later(session: DbSession, held: Claimed, error: str, reason: str = "server_busy") -> str:
    config = current_app.config
    if held.attempts >= int(config["OUTBOX_MAX_ATTEMPTS"]):
        return _finish(session, held, OutboxStatus.FAILED, f"gave up after {held.attempts} attempts: {error}",
                       "gave_up")
    delay = backoff_seconds(held.attempts, int(config["OUTBOX_BACKOFF_BASE"]),
                            int(config["OUTBOX_BACKOFF_MAX"]))
    _record(session, held, None, status=OutboxStatus.QUEUED, lease_until=None, last_error=scrub_error(error),
            reason=reason, next_attempt_at=utcnow() + timedelta(seconds=delay))
    # Ids and numbers only (an SMTP answer may quote the address); the fault suite reads the delays.
    log.info("email %s: attempt %s deferred, next in %.1f s", held.id, held.attempts, delay)
    return "retry"


@functools.cache
def _outcome_statement(columns: tuple[str, ...]) -> Any:
    """The outcome write, built once per set of columns written. The lease is the claim's fencing
    token: a worker that outlived its lease, after another took the row over, must not overwrite
    the newer claim's outcome."""
    return (update(OutboundEmail)
            .where(OutboundEmail.id == bindparam("fence_id"), OutboundEmail.status == OutboxStatus.SENDING,
                   OutboundEmail.lease_until == bindparam("fence_lease"))
            .values({column: bindparam(f"new_{column}") for column in columns})
            .execution_options(synchronize_session=False))


def _record(session: DbSession, held: Claimed, also: Callable[[DbSession], None] | None,
            **values: Any) -> None:
    """Write a claim's outcome, fenced by its lease, and whatever `also` writes, in one transaction.

    SMTP may already have accepted the email: an outcome lost to a dropped connection or a
    database restart would have the row sent again once its lease ran out. So a failed write is
    retried until the lease ends (after that another worker may hold the row, and the fence turns
    a late write into a no-op). bench/faults/a03_database_down.py found the duplicates this closes.
    """
    email_id, lease = held.id, held.lease_until
    if held.autocommit and also is not None:
        # What `also` writes must commit with the outcome: leave autocommit for a transaction.
        session.commit()
        held.autocommit = False
    statement = _outcome_statement(tuple(sorted(values)))
    params = {"fence_id": email_id, "fence_lease": lease, **{f"new_{k}": v for k, v in values.items()}}
    pause = 0.2
    while True:
        try:
            session.execute(statement, params)  # in autocommit, durable once this returns
            if also is not None:
                also(session)
            session.commit()  # in autocommit, no round trip: nothing is left to commit
            return
        except DBAPIError:
            with contextlib.suppress(DBAPIError):
                session.rollback()
            # The last wait is cut short to end just before the lease does: a doubled pause that
            # overshot it gave up early, and a 2 s outage sent emails twice (fault suite A3).
            left = (lease - utcnow()).total_seconds() - 0.05 if lease is not None else 0.0
            if left <= 0:
                raise
            wait = min(pause, left)
            log.warning("recording the outcome of email %s failed; retrying in %.1f s", email_id, wait)
            time.sleep(wait)
            pause = min(pause * 2, 5.0)


def backoff_seconds(attempts: int, base: int, ceiling: int) -> float:
    """Exponential backoff with full jitter over the upper half, so retries do not march in step."""
    top = min(ceiling, base * 2 ** max(attempts - 1, 0))
    return top / 2 + random.uniform(0, top / 2)  # noqa: S311 - jitter, not security


def _crash_point(name: str) -> None:
    # Fault tests make a worker die exactly here (CRASH_POINT); never set in production.
    if current_app.config.get("CRASH_POINT") == name:
        log.warning("crash point %s reached: exiting", name)
        os._exit(70)
