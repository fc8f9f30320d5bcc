"""What operators ask of a running platform: is the database there and migrated, is the broker
there and safe (Redis must never evict), and how much is waiting. Plain functions on a session or a
Redis client; every query is cheap enough to run every few seconds (it reads indexes, never the
whole outbox or signature table), and each caller bounds it with a timeout.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from campaign.models import OutboundEmail, OutboxStatus, Petition, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.types import DbSession

T = TypeVar("T")

# Statuses whose rows are few at any time, so counting them reads a small part of the status index.
# Sent and cancelled rows grow with every signature: they are counted over a recent window only.
BACKLOG_STATUSES = (OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.FAILED)

# kombu's Redis transport keeps one list per queue and priority step (queue, queue\x06\x163, ...).
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


# --- bounded checks ---------------------------------------------------------------------------

class CheckTimeout(Exception):
    """A check did not answer within its time."""


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_running: dict[tuple[str, str], concurrent.futures.Future[Any]] = {}
_executor_lock = threading.Lock()


def run_bounded(checks: dict[str, Callable[[], T]], timeout: float,
                scope: str = "") -> dict[str, T | BaseException]:
    """Run the checks in parallel and wait at most `timeout` seconds for all of them.

    A check that has not answered is reported as CheckTimeout and left to finish in the
    background; while it runs, asking for the same check (in the same scope: one app) again reports
    a timeout at once instead of starting another, so a hung database cannot pile up threads or
    connections.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                              thread_name_prefix="campaign-check")
        futures: dict[str, concurrent.futures.Future[Any] | None] = {}
        for name, check in checks.items():
            previous = _running.get((scope, name))
            if previous is not None and not previous.done():
                futures[name] = None
                continue
            future = _executor.submit(check)
            _running[(scope, name)] = future
            futures[name] = future
    pending = [f for f in futures.values() if f is not None]
    concurrent.futures.wait(pending, timeout=timeout)
    results: dict[str, T | BaseException] = {}
    for name, maybe in futures.items():
        if maybe is None:
            results[name] = CheckTimeout("the previous check has not answered yet")
        elif not maybe.done():
            results[name] = CheckTimeout(f"no answer within {timeout:g} s")
        elif maybe.exception() is not None:
            results[name] = maybe.exception()  # type: ignore[assignment]
        else:
            results[name] = maybe.result()
    return results


def limit_statement_time(session: DbSession, seconds: float) -> None:
    """On PostgreSQL, make the server cancel this transaction's statements after `seconds`."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}"))


# --- database and migrations ------------------------------------------------------------------

@dataclass(frozen=True)
class Migrations:
    """The revisions the code knows (from Alembic's script directory) and the ones it ends at."""
    heads: frozenset[str]
    known: frozenset[str]


def code_migrations(directory: str) -> Migrations:
    """Read the migration scripts once (a process's code does not change while it runs)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", directory)
    script = ScriptDirectory.from_config(config)
    return Migrations(heads=frozenset(script.get_heads()),
                      known=frozenset(rev.revision for rev in script.walk_revisions()))


def migration_state(session: DbSession, code: Migrations) -> str:
    """Compare the database's alembic_version with the code's heads.

    "ok": at head. "ahead": the database has a revision this code does not know, which is what old
    code sees during a rolling upgrade after `db upgrade` ran; expand/contract migrations keep old
    code working then (docs/upgrading.md), so it is ready. "behind": the code expects migrations
    that have not run. "not migrated": no alembic_version at all.
    """
    try:
        with session.begin_nested():
            versions = set(session.scalars(text("SELECT version_num FROM alembic_version")))
    except SQLAlchemyError:
        return "not migrated"
    if not versions:
        return "not migrated"
    if versions == code.heads:
        return "ok"
    if versions - code.known:
        return "ahead"
    return "behind"


def check_database(session: DbSession, code: Migrations | None, timeout: float) -> str:
    """Reach the database (one round trip) and report the migration state."""
    limit_statement_time(session, timeout)
    session.execute(text("SELECT 1"))
    return migration_state(session, code) if code is not None else "ok"


# --- Redis --------------------------------------------------------------------------------------

def redis_eviction_policy(client: Any) -> str | None:
    """Redis's maxmemory-policy, from INFO (which managed Redis services allow) or CONFIG GET."""
    info = client.info("memory")
    policy = info.get("maxmemory_policy")
    if policy:
        return str(policy)
    found = client.config_get("maxmemory-policy")
    value = found.get("maxmemory-policy")
    return str(value) if value else None


def check_redis(client: Any) -> str:
    """"ok" when Redis answers and never evicts; else what is wrong, in words fit for /readyz."""
    client.ping()
    policy = redis_eviction_policy(client)
    if policy is None:
        return "ok"  # the policy is hidden; `flask check-redis` says so
    if policy != "noeviction":
        return f"maxmemory-policy is {policy}, not noeviction"
    return "ok"


def redis_queue_lengths(client: Any, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue on a Redis broker (every priority list of it)."""
    names = list(queues)
    with client.pipeline(transaction=False) as pipe:
        for queue in names:
            for step in _KOMBU_PRIORITY_STEPS:
                pipe.llen(f"{queue}{_KOMBU_PRIORITY_SEP}{step}" if step else queue)
        sizes = pipe.execute()
    per_queue = len(_KOMBU_PRIORITY_STEPS)
    return {queue: int(sum(sizes[i * per_queue:(i + 1) * per_queue])) for i, queue in enumerate(names)}


def redis_unacked(client: Any) -> int:
    """Tasks a worker has taken but not yet acknowledged (kombu's unacked hash)."""
    return int(client.hlen("unacked"))


def folder_queue_lengths(folder: str | Path, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue of kombu's filesystem broker (files `<n>_<uuid>.<queue>.msg`)."""
    counts = dict.fromkeys(queues, 0)
    for entry in Path(folder).iterdir():
        queue = entry.name.partition(".")[2].removesuffix(".msg")
        if queue in counts:
            counts[queue] += 1
    return counts


def check_folder(folder: str | Path) -> str:
    path = Path(folder)
    if not path.is_dir():
        return "broker folder missing"
    return "ok"


# --- what is waiting ---------------------------------------------------------------------------

@dataclass(frozen=True)
class OutboxSnapshot:
    by_kind_status: list[tuple[str, str, int]]
    oldest_queued_age: float
    oldest_due_age: float
    sent_recent: list[tuple[str, int]]


def outbox_snapshot(session: DbSession, recent_window: int, lease_seconds: int,
                    max_attempts: int, now: datetime | None = None) -> OutboxSnapshot:
    """The outbox's backlog by kind and status, how long the oldest queued email has waited (since
    it was queued, and since it became due), and the emails sent in the last `recent_window`
    seconds by kind.

    Every query is bounded by the (status, next_attempt_at) index: the backlog statuses hold few
    rows, and a sent row's next_attempt_at is at most the lease times the attempts before its
    sent_at, which bounds the recent-sent range.
    """
    now = now or utcnow()
    rows = session.execute(
        select(OutboundEmail.kind, OutboundEmail.status, func.count())
        .where(OutboundEmail.status.in_([s.value for s in BACKLOG_STATUSES]))
        .group_by(OutboundEmail.kind, OutboundEmail.status))
    by_kind_status = [(str(kind), str(status), int(n)) for kind, status, n in rows]
    queued = OutboundEmail.status == OutboxStatus.QUEUED
    oldest_created = session.scalar(select(func.min(OutboundEmail.created_at)).where(queued))
    oldest_due = session.scalar(
        select(func.min(OutboundEmail.next_attempt_at)).where(queued, OutboundEmail.next_attempt_at <= now))
    since = now - timedelta(seconds=recent_window)
    earliest_due = since - timedelta(seconds=lease_seconds * max(max_attempts, 1))
    sent = session.execute(
        select(OutboundEmail.kind, func.count())
        .where(OutboundEmail.status == OutboxStatus.SENT, OutboundEmail.next_attempt_at >= earliest_due,
               OutboundEmail.sent_at >= since)
        .group_by(OutboundEmail.kind))
    return OutboxSnapshot(
        by_kind_status=by_kind_status,
        oldest_queued_age=_age(now, oldest_created),
        oldest_due_age=_age(now, oldest_due),
        sent_recent=[(str(kind), int(n)) for kind, n in sent],
    )


def _age(now: datetime, then: Any) -> float:
    if then is None:
        return 0.0
    if isinstance(then, str):  # SQLite's MIN() over the column returns the stored text
        then = datetime.fromisoformat(then)
    if then.tzinfo is None:
        from datetime import UTC

        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


def held_signatures(session: DbSession) -> int:
    """Signatures held for review, counted per petition through the (petition, status) index."""
    per_petition = (select(func.count()).select_from(Signature)
                    .where(Signature.petition_id == Petition.id, Signature.status == SignatureStatus.HELD)
                    .correlate(Petition).scalar_subquery())
    return int(session.scalar(select(func.coalesce(func.sum(per_petition), 0)).select_from(Petition)) or 0)
