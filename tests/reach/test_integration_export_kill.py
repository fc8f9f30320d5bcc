"""Background exports whose worker really dies, against PostgreSQL, Redis and `celery -A worker
worker` subprocesses: CRASH_POINT=export_writing makes the worker exit with the file half
written, as a SIGKILL or an out-of-memory kill would.

- The export is taken back by the reach job (beat) of another worker once its lease has run out,
  and completes: one file, every row, no .part left.
- A worker that dies on every attempt: the export ends failed, with the reason, after
  EXPORT_MAX_ATTEMPTS.

Shown failing once against a broken variant: with take_back_abandoned_exports removed from
reach.run, the first test's export stayed "running" until its wait timed out. The same test
first found that a taken-back export waited for waiting_exports' one-minute grace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from campaign.extensions import db
from campaign.models import ExportStatus, SignatureExport
from campaign.services.csv_safe import read_rows
from campaign.services.exports import ABANDONED
from tests.organize.conftest import FAST_HASHING
from tests.reach.conftest import World, add_signers, make_world, post_form, signed_in
from tests.support import base_config, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def build(make_pg_app: Callable[..., Flask], pg_url: str, smtp_port: int, redis_url: str,
          tmp_path: Path) -> tuple[Flask, dict[str, Any], World]:
    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()
    overrides = {
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "EXPORT_DIR": str(tmp_path / "exports"),
        "EXPORT_LEASE_SECONDS": 2,
        "EXPORT_MAX_ATTEMPTS": 2,
        "REACH_INTERVAL": 1.0,
        "OUTBOX_SWEEP_INTERVAL": 60.0,
        "DELIVERIES_INTERVAL": 600.0,
        "TRENDING_INTERVAL": 600.0,
        "RETENTION_INTERVAL": 600.0,
        **FAST_HASHING,
    }
    app = make_pg_app(**overrides)
    return app, base_config(pg_url, smtp_port, **overrides), make_world(app)


def _ask_for_file(world: World) -> int:
    client = signed_in(world.app)
    response = post_form(client, f"/organize/campaigns/{world.campaign_id}/export",
                         {"petition_id": "", "columns": ["id", "name", "email"], "statuses": ["confirmed"],
                          "consent": "any", "format": "csv", "as_file": "y"})
    assert response.status_code == 303
    return int(re.search(r"/exports/(\d+)", response.headers["Location"]).group(1))


def _job(app: Flask, export_id: int) -> SignatureExport:
    with app.app_context():
        try:
            job = db.session.get(SignatureExport, export_id)
            assert job is not None
            db.session.expunge(job)
            return job
        finally:
            db.session.remove()


def _files(app: Flask, export_id: int) -> list[Path]:
    return sorted(Path(app.config["EXPORT_DIR"]).glob(f"{export_id}-*"))


def test_an_export_whose_worker_died_is_finished_by_another_worker(build, start_worker):
    app, config, world = build
    add_signers(app, world.petition_id, 3000)  # three chunks: the crash leaves the file partial
    export_id = _ask_for_file(world)
    dying = start_worker(config, queues="bulk", concurrency=1, CRASH_POINT="export_writing")
    wait_for(lambda: b"exitcode 70" in dying.log_path.read_bytes(), timeout=60, interval=0.2)
    dying.stop()
    job = _job(app, export_id)
    assert (job.status, job.attempts) == (ExportStatus.RUNNING, 1)
    assert [p.suffix for p in _files(app, export_id)] == [".part"]

    start_worker(config, queues="bulk,maintenance", concurrency=1, beat=True)
    wait_for(lambda: _job(app, export_id).status == ExportStatus.DONE, timeout=90, interval=0.5)
    job = _job(app, export_id)
    assert (job.rows, job.attempts) == (3000, 2)
    files = _files(app, export_id)
    assert [p.name for p in files] == [job.filename]
    assert len(read_rows(files[0].read_text(encoding="utf-8"))) == 3001


def test_an_export_that_kills_its_worker_every_time_ends_failed(build, start_worker):
    app, config, world = build
    add_signers(app, world.petition_id, 3000)
    export_id = _ask_for_file(world)
    start_worker(config, queues="bulk,maintenance", concurrency=1, beat=True, CRASH_POINT="export_writing")
    wait_for(lambda: _job(app, export_id).status == ExportStatus.FAILED, timeout=90, interval=0.5)
    job = _job(app, export_id)
    assert (job.error, job.attempts) == (ABANDONED, 2)
    assert _files(app, export_id) == []
    page = signed_in(app).get(f"/organize/exports/{export_id}").get_data(as_text=True)
    assert f"The export failed ({ABANDONED})." in page
