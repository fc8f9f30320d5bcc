"""Issue 3's closing dates, run by Celery beat (issue 11): `petitions.close_due` is on the beat
schedule at PETITION_CLOSE_INTERVAL, and a real worker with beat closes a petition whose date
has passed, without touching one whose date has not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from flask import Flask
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import Petition, PetitionStatus
from campaign.models.base import utcnow
from campaign.services.demo import seed_demo
from tests.support import base_config, wait_for


def test_the_beat_schedule_runs_close_due_at_its_setting(make_app) -> None:
    app = make_app(PETITION_CLOSE_INTERVAL=42)
    celery = app.extensions["celery"]
    entry = celery.conf.beat_schedule["petitions-close-due"]
    assert entry["task"] == "petitions.close_due"
    assert entry["schedule"] == 42.0 and entry["options"]["queue"] == "maintenance"


def _statuses(app: Flask) -> dict[str, str]:
    with app.app_context():
        try:
            return {str(row.slug): str(row.status) for row in db.session.execute(select(Petition.slug, Petition.status))}
        finally:
            db.session.remove()


def test_a_worker_with_beat_closes_a_petition_past_its_date(make_pg_app, pg_url, smtp_port, redis_url,
                                                             start_worker: Any) -> None:
    # Checked against the schedule without this entry once: the petition stayed published and
    # the wait below failed.
    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()
    overrides = {"CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url, "PETITION_CLOSE_INTERVAL": 1,
                 "PASSWORD_HASH_MEMORY_KIB": 19456, "PASSWORD_HASH_TIME_COST": 2, "PASSWORD_HASH_PARALLELISM": 1}
    app = make_pg_app(**overrides)
    with app.app_context():
        seed_demo(db.session)
        petitions = list(db.session.scalars(select(Petition).where(Petition.status == PetitionStatus.PUBLISHED)))
        assert petitions
        due = petitions[0]
        due.closes_at = utcnow() - timedelta(minutes=1)
        due_slug = due.slug
        later = Petition(campaign_id=due.campaign_id, slug="not-yet", title="Not yet", summary="",
                         body_markdown="", body_html="", language="en", closes_at=utcnow() + timedelta(days=1))
        db.session.add(later)
        db.session.flush()
        later.publish()
        db.session.commit()
    start_worker(base_config(pg_url, smtp_port, **overrides), queues="maintenance", concurrency=1, beat=True)
    wait_for(lambda: _statuses(app)[due_slug] == PetitionStatus.CLOSED, timeout=60, interval=0.5)
    assert _statuses(app)["not-yet"] == PetitionStatus.PUBLISHED
