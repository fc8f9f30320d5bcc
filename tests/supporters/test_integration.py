"""Issue 5 on the production stack: PostgreSQL, Redis, a real `celery -A worker worker` with beat.
The reminder is found by beat from rows, sent once; deleting a confirmed signature on PostgreSQL
uncounts it once even when two requests race."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import OutboundEmail, Signature
from campaign.services.counting import signature_count
from campaign.services.demo import seed_demo
from tests.support import base_config, wait_for
from tests.supporters.conftest import csrf, messages_to, sign_and_confirm, sign_in

pytestmark = pytest.mark.integration

_RUNS = re.compile(r"Task reminders\.run\[[^\]]+\] succeeded")


def _reminder_runs(worker: Any) -> int:
    return len(_RUNS.findall(Path(worker.log_path).read_text(errors="replace")))


@pytest.fixture
def pg_app(make_pg_app: Any, pg_url: str, smtp_port: int, redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()
    overrides = {"CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
                 # A reminder after 2 seconds, looked for every second: the real job, sped up.
                 "REMINDER_AFTER_HOURS": 2 / 3600, "REMINDER_INTERVAL": 1.0}
    app = make_pg_app(**overrides)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return app, base_config(pg_url, smtp_port, **overrides)


def test_beat_sends_one_reminder_from_rows(pg_app: Any, start_worker: Any, mailbox: Any) -> None:
    app, config = pg_app
    client = app.test_client()
    sign_in(client, email="slow@example.org")
    worker = start_worker(config, beat=True)
    subject = "Your signature is not confirmed yet"

    def reminders() -> list[Any]:
        return [m for m in messages_to(mailbox, "slow@example.org") if m["Subject"] == subject]

    wait_for(reminders, timeout=40)
    # Several more runs of the job: still exactly one reminder.
    runs = _reminder_runs(worker)
    wait_for(lambda: _reminder_runs(worker) >= runs + 3, timeout=30)
    time.sleep(1)
    assert len(reminders()) == 1
    with app.app_context():
        rows = db.session.scalars(select(OutboundEmail).where(OutboundEmail.kind == "signature_reminder")).all()
        assert len(rows) == 1 and rows[0].status == "sent"
        db.session.remove()


def test_racing_deletes_uncount_once_on_postgresql(pg_app: Any, mailbox: Any) -> None:
    app, _config = pg_app
    client = app.test_client()
    path = sign_and_confirm(app, client, mailbox, "race@example.org")
    with app.app_context():
        petition_id = db.session.scalar(select(Signature.petition_id))
        assert signature_count(db.session, petition_id) == 1
        db.session.remove()
    token = csrf(client.get(path + "/delete").get_data(as_text=True))
    cookies = client.get_cookie("session")
    statuses: list[int] = []

    def delete() -> None:
        racer = app.test_client()
        if cookies is not None:
            racer.set_cookie("session", cookies.value)
        statuses.append(racer.post(path + "/delete", data={"csrf_token": token}).status_code)

    threads = [threading.Thread(target=delete) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [303] * 4
    with app.app_context():
        assert signature_count(db.session, petition_id) == 0
        assert db.session.scalar(select(Signature.id)) is None
        db.session.remove()
