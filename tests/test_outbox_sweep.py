"""The outbox sweep after an outage: each queue topped up to the batch, a row it published not
published again within the grace, and follow-up sweeps while a backlog remains (RELIABILITY.md A2)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select, update

from campaign.extensions import db
from campaign.models import OutboundEmail, OutboxStatus
from campaign.models.base import utcnow
from campaign.services.killswitch import BULK_MAIL, set_switch
from campaign.services.outbox import sweep, take_due


def _queue_rows(app, kind: str, count: int, age: float = 120.0) -> list[int]:
    with app.app_context():
        rows = [OutboundEmail(idempotency_key=f"sweep:{kind}:{n}", kind=kind,
                              next_attempt_at=utcnow() - timedelta(seconds=age - n * 0.001))
                for n in range(count)]
        db.session.add_all(rows)
        db.session.commit()
        ids = [row.id for row in rows]
        db.session.remove()
    return ids


def _take(app, room: dict[str, int], grace: float = 30.0) -> tuple[list[tuple[int, str]], set[str]]:
    with app.app_context():
        try:
            return take_due(db.session, room, grace)
        finally:
            db.session.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request, make_app):
    if request.param == "sqlite":
        return make_app()
    return request.getfixturevalue("make_pg_app")()


def test_each_due_row_is_handed_out_once_within_the_grace(any_app):
    ids = _queue_rows(any_app, "signature_confirmation", 7)
    first, more = _take(any_app, {"confirmations": 3})
    assert more == {"confirmations"}
    assert sorted(email_id for email_id, _ in first) == ids[:3]  # oldest first
    second, more = _take(any_app, {"confirmations": 3})
    assert sorted(email_id for email_id, _ in second) == ids[3:6] and more == {"confirmations"}
    third, more = _take(any_app, {"confirmations": 3})
    assert [email_id for email_id, _ in third] == [ids[6]] and more == set()
    assert _take(any_app, {"confirmations": 3}) == ([], set())
    # Once the grace has passed, a row still queued (its task lost) is handed out again.
    with any_app.app_context():
        db.session.execute(update(OutboundEmail).where(OutboundEmail.id.in_(ids[:2]))
                           .values(swept_at=utcnow() - timedelta(seconds=31)))
        db.session.commit()
        db.session.remove()
    again, _ = _take(any_app, {"confirmations": 10})
    assert sorted(email_id for email_id, _ in again) == ids[:2]


def test_rows_inside_the_grace_or_not_due_are_left_to_their_own_tasks(any_app):
    _queue_rows(any_app, "signature_confirmation", 2, age=10.0)
    assert _take(any_app, {"confirmations": 10}) == ([], set())
    taken, _ = _take(any_app, {"confirmations": 10}, grace=5.0)
    assert len(taken) == 2


def test_room_is_per_queue_and_a_paused_queue_gets_nothing(any_app):
    confirmations = _queue_rows(any_app, "signature_confirmation", 4)
    letters = _queue_rows(any_app, "letter_to_target", 4)
    taken, more = _take(any_app, {"confirmations": 0, "letters": 2})
    assert {email_id for email_id, _ in taken} <= set(letters) and len(taken) == 2 and more == {"letters"}
    with any_app.app_context():
        set_switch(db.session, None, BULK_MAIL, True)  # pauses letters and bulk
        db.session.commit()
        db.session.remove()
    taken, more = _take(any_app, {"confirmations": 10, "letters": 10})
    assert sorted(email_id for email_id, _ in taken) == confirmations and more == set()


def test_a_claim_whose_lease_ran_out_is_handed_out(any_app):
    [email_id] = _queue_rows(any_app, "signature_confirmation", 1)
    with any_app.app_context():
        db.session.execute(update(OutboundEmail).values(
            status=OutboxStatus.SENDING, attempts=1, lease_until=utcnow() - timedelta(seconds=60)))
        db.session.commit()
        db.session.remove()
    assert _take(any_app, {"confirmations": 5}) == ([(email_id, "signature_confirmation")], set())


def sweep_outbox(follow_up: str | None = None) -> int:
    try:
        return sweep(db.session, follow_up)
    finally:
        db.session.remove()


def _messages(client: redis.Redis, queue: str) -> list[dict]:
    """Newest first, as LPUSH leaves them; the workers take from the other end."""
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def _emails(messages: list) -> list[int]:
    return sorted(int(m["headers"]["argsrepr"].strip("()[],")) for m in messages
                  if isinstance(m, dict) and m["headers"]["task"] == "outbox.send")


KEYS = ("confirmations", "letters", "maintenance", "campaign:outbox:sweep-follow-up:confirmations")


def test_with_redis_the_sweep_tops_the_queue_up_and_follows_up_behind_the_batch(make_pg_app, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(*KEYS)
    app = make_pg_app(CELERY_BROKER_URL=redis_url, OUTBOX_SWEEP_BATCH=5, OUTBOX_SWEEP_GRACE=30)
    ids = _queue_rows(app, "signature_confirmation", 11)
    client.lpush("confirmations", json.dumps("waiting"), json.dumps("waiting"))  # two tasks already wait: room for 3
    try:
        with app.app_context():
            assert sweep_outbox() == 3
            newest, *rest = _messages(client, "confirmations")
            assert _emails(rest) == ids[:3]
            # Behind the batch, in the same queue: a sweep of that queue alone.
            assert newest["headers"]["task"] == "outbox.sweep"
            assert newest["headers"]["eta"] is None
            assert "'follow_up': 'confirmations'" in newest["headers"]["kwargsrepr"]
            assert client.llen("maintenance") == 0
            # Beat's next sweep, while that follow-up is pending, starts no second chain, and a
            # full queue gets nothing more.
            assert sweep_outbox() == 0
            assert client.llen("confirmations") == 6
            # The workers took the batch and reached the follow-up: it tops up and goes behind.
            client.delete("confirmations")
            assert sweep_outbox(follow_up="confirmations") == 5
            newest, *rest = _messages(client, "confirmations")
            assert _emails(rest) == ids[3:8] and newest["headers"]["task"] == "outbox.sweep"
            client.delete("confirmations")
            assert sweep_outbox(follow_up="confirmations") == 3  # the last ones: no follow-up
            assert _emails(_messages(client, "confirmations")) == ids[8:]
            assert client.llen("confirmations") == 3
            swept = db.session.scalar(select(func.count()).where(OutboundEmail.swept_at.is_not(None)))
            assert swept == 11
    finally:
        client.delete(*KEYS)


def test_a_follow_up_tops_up_only_its_own_queue(make_pg_app, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(*KEYS)
    app = make_pg_app(CELERY_BROKER_URL=redis_url, OUTBOX_SWEEP_BATCH=5, OUTBOX_SWEEP_GRACE=30)
    _queue_rows(app, "signature_confirmation", 2)
    letters = _queue_rows(app, "letter_to_target", 2)
    try:
        with app.app_context():
            assert sweep_outbox(follow_up="letters") == 2
            assert _emails(_messages(client, "letters")) == letters
            assert client.llen("confirmations") == 0
    finally:
        client.delete(*KEYS)


def test_without_follow_ups_the_backlog_waits_for_beat(make_pg_app, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(*KEYS)
    app = make_pg_app(CELERY_BROKER_URL=redis_url, OUTBOX_SWEEP_BATCH=2, OUTBOX_SWEEP_GRACE=30,
                      OUTBOX_SWEEP_FOLLOW_UP=False)
    _queue_rows(app, "signature_confirmation", 5)
    try:
        with app.app_context():
            assert sweep_outbox() == 2
            assert len(_emails(_messages(client, "confirmations"))) == client.llen("confirmations") == 2
    finally:
        client.delete(*KEYS)
