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


def _take(app, room: dict[str, int], grace: float = 30.0) -> tuple[list[tuple[int, str]], bool]:
    with app.app_context():
        try:
            return take_due(db.session, lambda queue: room.get(queue, 0), grace)
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
    assert [email_id for email_id, _ in first] and more
    assert sorted(email_id for email_id, _ in first) == ids[:3]  # oldest first
    second, more = _take(any_app, {"confirmations": 3})
    assert sorted(email_id for email_id, _ in second) == ids[3:6] and more
    third, more = _take(any_app, {"confirmations": 3})
    assert [email_id for email_id, _ in third] == [ids[6]] and not more
    assert _take(any_app, {"confirmations": 3}) == ([], False)
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
    assert _take(any_app, {"confirmations": 10}) == ([], False)
    taken, _ = _take(any_app, {"confirmations": 10}, grace=5.0)
    assert len(taken) == 2


def test_room_is_per_queue_and_a_paused_queue_gets_nothing(any_app):
    confirmations = _queue_rows(any_app, "signature_confirmation", 4)
    letters = _queue_rows(any_app, "letter_to_target", 4)
    taken, more = _take(any_app, {"confirmations": 0, "letters": 2})
    assert {email_id for email_id, _ in taken} <= set(letters) and len(taken) == 2 and more
    with any_app.app_context():
        set_switch(db.session, None, BULK_MAIL, True)  # pauses letters and bulk
        db.session.commit()
        db.session.remove()
    taken, more = _take(any_app, {"confirmations": 10, "letters": 10})
    assert sorted(email_id for email_id, _ in taken) == confirmations and not more


def test_a_claim_whose_lease_ran_out_is_handed_out(any_app):
    [email_id] = _queue_rows(any_app, "signature_confirmation", 1)
    with any_app.app_context():
        db.session.execute(update(OutboundEmail).values(
            status=OutboxStatus.SENDING, attempts=1, lease_until=utcnow() - timedelta(seconds=60)))
        db.session.commit()
        db.session.remove()
    assert _take(any_app, {"confirmations": 5}) == ([(email_id, "signature_confirmation")], False)


def sweep_outbox(follow_up: bool = False) -> int:
    try:
        return sweep(db.session, follow_up)
    finally:
        db.session.remove()


def _messages(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_with_redis_the_sweep_tops_the_queue_up_and_follows_up_while_rows_remain(make_pg_app, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete("confirmations", "maintenance", "campaign:outbox:sweep-follow-up")
    app = make_pg_app(CELERY_BROKER_URL=redis_url, OUTBOX_SWEEP_BATCH=5, OUTBOX_SWEEP_FOLLOW_UP=2.0,
                      OUTBOX_SWEEP_GRACE=30)
    ids = _queue_rows(app, "signature_confirmation", 12)
    client.lpush("confirmations", json.dumps("waiting"), json.dumps("waiting"))  # two tasks already wait: room for 3
    try:
        with app.app_context():
            assert sweep_outbox() == 3
            assert client.llen("confirmations") == 5
            published = [m["headers"]["argsrepr"] for m in _messages(client, "confirmations")
                         if isinstance(m, dict)]
            assert sorted(int(text.strip("()[],")) for text in published) == ids[:3]
            [follow_up] = _messages(client, "maintenance")
            assert follow_up["headers"]["task"] == "outbox.sweep"
            assert follow_up["headers"]["eta"] is not None
            assert "'follow_up': True" in follow_up["headers"]["kwargsrepr"]
            # Beat's next sweep, with a follow-up pending, starts no second chain; a full queue
            # gets nothing more.
            assert sweep_outbox() == 0
            assert client.llen("maintenance") == 1
            # The workers took the five: the follow-up tops up again and schedules the next.
            client.delete("confirmations")
            assert sweep_outbox(follow_up=True) == 5
            assert client.llen("maintenance") == 2
            client.delete("confirmations")
            assert sweep_outbox(follow_up=True) == 4  # the last ones: no follow-up after this
            assert client.llen("maintenance") == 2
            swept = db.session.scalar(select(func.count()).where(OutboundEmail.swept_at.is_not(None)))
            assert swept == 12
    finally:
        client.delete("confirmations", "maintenance", "campaign:outbox:sweep-follow-up")
