"""/healthz and /readyz: ready only when the database answers, the schema is at head (or ahead,
during a rolling upgrade) and the broker answers; never slow, never revealing."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from campaign import create_app
from campaign.extensions import db
from campaign.services import health
from campaign.services.health import Migrations, check_folder, folder_queue_lengths
from tests.support import base_config

PASSWORD = "s3cret-broker-password"


def readyz(app):
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    return response, time.monotonic() - started


def unreachable_app(smtp_port, url, **overrides):
    """An app whose database is not there (create_app itself connects to nothing)."""
    return create_app(base_config(url, smtp_port, **overrides))


def test_healthz_answers_without_touching_anything(smtp_port):
    app = unreachable_app(smtp_port, "postgresql://nobody@127.0.0.1:1/none")
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_when_migrated_to_head(make_migrated_app):
    response, took = readyz(make_migrated_app())
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
    assert response.headers["Cache-Control"] == "no-store"
    assert took < 1.0


def test_not_ready_without_migrations(app):
    # The `app` fixture builds tables with create_all: no alembic_version, as if nobody ran upgrade.
    response, _ = readyz(app)
    assert response.status_code == 503
    body = response.get_json()
    assert body["failed"] == ["migrations"]
    assert body["checks"]["migrations"] == "not migrated"
    assert body["checks"]["database"] == "ok"


def test_not_ready_when_code_expects_a_migration_that_has_not_run(make_migrated_app):
    app = make_migrated_app()
    with app.app_context():
        current = db.session.scalar(text("SELECT version_num FROM alembic_version"))
        db.session.remove()
    assert current
    # What the code of the next release knows: the database's revision and a newer head.
    app.extensions["campaign.ops.migrations"] = Migrations(
        heads=frozenset({"9999_next"}), known=frozenset({current, "9999_next"}))
    response, _ = readyz(app)
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"] == "behind"


def test_still_ready_when_the_database_is_ahead_of_this_code(make_migrated_app):
    # A rolling upgrade: `db upgrade` has run and old processes still serve. Expand/contract
    # migrations keep them working, and pulling them all out of the load balancer would be an outage.
    app = make_migrated_app()
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
        db.session.commit()
        db.session.remove()
    response, _ = readyz(app)
    assert response.status_code == 200
    assert response.get_json()["checks"]["migrations"] == "ahead"


def test_database_refusing_connections_is_503_at_once(smtp_port):
    app = unreachable_app(smtp_port, "postgresql://nobody@127.0.0.1:1/none")
    response, took = readyz(app)
    assert response.status_code == 503
    assert response.get_json() == {"status": "not ready", "failed": ["database"],
                                   "checks": {"database": "unreachable"}}
    assert took < 2.0


def test_hung_database_is_503_within_the_timeout_and_threads_do_not_pile_up(smtp_port, black_hole):
    app = unreachable_app(smtp_port, f"postgresql://nobody:{PASSWORD}@127.0.0.1:{black_hole}/none",
                          READYZ_TIMEOUT=0.5, DATABASE_CONNECT_TIMEOUT=30)
    threads_before = threading.active_count()
    for _ in range(5):
        response, took = readyz(app)
        assert response.status_code == 503
        assert response.get_json()["checks"]["database"] == "timeout"
        assert took < 1.5, f"/readyz took {took:.2f} s with a hung database"
    # The first probe's check is still waiting on the silent listener; later probes did not start
    # another each (one thread, not five, with their connections).
    assert threading.active_count() - threads_before <= 2
    assert PASSWORD not in response.get_data(as_text=True)


@pytest.mark.integration
def test_dead_broker_is_named_and_its_url_is_not_shown(make_migrated_app):
    app = make_migrated_app(CELERY_BROKER_URL=f"redis://:{PASSWORD}@127.0.0.1:1/0")
    response, took = readyz(app)
    assert response.status_code == 503
    body = response.get_json()
    assert body["failed"] == ["broker"]
    assert body["checks"] == {"database": "ok", "migrations": "ok", "broker": "unreachable"}
    text_body = response.get_data(as_text=True)
    assert PASSWORD not in text_body and "127.0.0.1" not in text_body
    assert took < 2.0


@pytest.mark.integration
def test_hung_redis_is_a_timeout(make_migrated_app, black_hole):
    app = make_migrated_app(CELERY_BROKER_URL=f"redis://127.0.0.1:{black_hole}/0", READYZ_TIMEOUT=0.5)
    response, took = readyz(app)
    assert response.status_code == 503
    assert response.get_json()["checks"]["broker"] in {"timeout", "unreachable"}
    assert took < 1.5


@pytest.mark.integration
def test_ready_with_the_suites_redis_as_broker(make_migrated_app, redis_url):
    response, _ = readyz(make_migrated_app(CELERY_BROKER_URL=redis_url, REDIS_URL=redis_url))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"]["broker"] == "ok"


def test_filesystem_broker_folder_check(tmp_path):
    assert check_folder(tmp_path) == "ok"
    assert check_folder(tmp_path / "gone") == "broker folder missing"
    for name in ("1_a.confirmations.msg", "2_b.confirmations.msg", "3_c.bulk.msg", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert folder_queue_lengths(tmp_path, ["confirmations", "bulk", "letters"]) == {
        "confirmations": 2, "bulk": 1, "letters": 0}


def test_a_check_that_never_answers_is_reported_once_and_not_restarted():
    release = threading.Event()
    calls = []

    def stuck() -> str:
        calls.append(1)
        release.wait(5)
        return "ok"

    try:
        first = health.run_bounded({"test.stuck": stuck, "test.fine": lambda: "ok"}, timeout=0.2)
        second = health.run_bounded({"test.stuck": stuck}, timeout=0.2)
    finally:
        release.set()
    assert first["test.fine"] == "ok"
    assert isinstance(first["test.stuck"], health.CheckTimeout)
    assert isinstance(second["test.stuck"], health.CheckTimeout)
    assert len(calls) == 1
