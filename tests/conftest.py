"""Fixtures: apps built from the factory on SQLite or PostgreSQL, a real SMTP sink, and
Celery worker processes. With CI=true any skip is turned into a failure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from campaign import create_app
from campaign.extensions import db
from campaign.mail.sink import SinkHandler, start_sink
from tests.support import PG_ADMIN_URL, REDIS_BASE_URL, ROOT, base_config, env_for, xdist_index

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which must run everything: {reason}"


# --- SMTP ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _sink() -> Iterator[tuple[Any, SinkHandler]]:
    controller, handler = start_sink()
    yield controller, handler
    controller.stop()


@pytest.fixture
def mailbox(_sink: tuple[Any, SinkHandler]) -> Iterator[SinkHandler]:
    """The real SMTP server on loopback, emptied for each test."""
    _, handler = _sink
    with handler.lock:
        handler.messages.clear()
    handler.refusals.clear()
    yield handler
    handler.refusals.clear()


@pytest.fixture
def smtp_port(_sink: tuple[Any, SinkHandler]) -> int:
    return int(_sink[0].port)


# --- SQLite apps ----------------------------------------------------------------------------

def _dispose(apps: list[Flask]) -> None:
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def _build(config: dict[str, Any]) -> Flask:
    app = create_app(config)
    with app.app_context():
        db.create_all()
    return app


@pytest.fixture
def make_app(tmp_path: Path, smtp_port: int) -> Iterator[Callable[..., Flask]]:
    """Build an app on a fresh SQLite file; keyword arguments override the config."""
    built: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        url = f"sqlite:///{tmp_path / f'campaign-{len(built)}.db'}"
        app = _build(base_config(url, smtp_port, **overrides))
        built.append(app)
        return app

    yield factory
    _dispose(built)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def demo(app: Flask) -> str:
    from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return DEMO_PETITION_SLUG


# --- PostgreSQL and Redis -----------------------------------------------------------------

def _require(what: str, check: Callable[[], None], how: str) -> None:
    try:
        check()
    except Exception as error:
        pytest.skip(f"{what} not reachable ({type(error).__name__}: {error}); {how}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this test process's own on the local PostgreSQL, with the schema."""
    import psycopg

    name = f"campaign_test_{xdist_index()}_{os.getpid()}"

    def create() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    _require("PostgreSQL at " + PG_ADMIN_URL, create,
             "start PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) or set TEST_POSTGRES_URL")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database number of this test process's own, flushed."""
    import redis

    url = f"{REDIS_BASE_URL}/{_claim_redis_db()}"
    _require("Redis at " + REDIS_BASE_URL, lambda: redis.Redis.from_url(url, socket_timeout=3).flushdb(),
             "start redis-server on 127.0.0.1:6379 or set TEST_REDIS_URL")
    return url


def _claim_redis_db() -> int:
    """Databases 1-15 are handed out by lock file, so two pytest runs on one machine never share one."""
    from bench.common import lock_redis_db

    start = xdist_index() % 15
    number = lock_redis_db([1 + (start + step) % 15 for step in range(15)])
    if number is None:
        pytest.fail("all 15 test Redis databases are taken by other test runs on this machine")
    return number


@pytest.fixture
def make_pg_app(pg_url: str, smtp_port: int) -> Iterator[Callable[..., Flask]]:
    """Build an app on this process's PostgreSQL database, emptied first."""
    built: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        app = create_app(base_config(pg_url, smtp_port, **overrides))
        with app.app_context():
            db.drop_all()
            db.create_all()
        built.append(app)
        return app

    yield factory
    _dispose(built)


# --- Celery worker processes --------------------------------------------------------------

class WorkerProcess:
    """`celery -A worker worker` as a subprocess: real, and killable."""

    def __init__(self, config: dict[str, Any], log_path: Path, queues: str, concurrency: int,
                 beat: bool, extra_env: dict[str, str]) -> None:
        env = env_for(config) | extra_env
        env["PYTHONPATH"] = str(ROOT)
        args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                "-Q", queues, "--concurrency", str(concurrency), "--without-gossip",
                "--without-mingle", "--without-heartbeat", "-n", f"w{time.monotonic_ns()}@%h"]
        if beat:
            args += ["-B", "--schedule", str(log_path.with_suffix(".beat"))]
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        # A session of its own: stop() also ends the pool and beat children a SIGKILLed main
        # process leaves behind.
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                raise RuntimeError("worker exited early:\n" + self.log_path.read_text(errors="replace"))
            time.sleep(0.2)
        raise RuntimeError("worker not ready in time:\n" + self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(config: dict[str, Any], queues: str = "confirmations,letters,bulk,maintenance",
              concurrency: int = 2, beat: bool = False, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"worker-{len(workers)}.log", queues, concurrency,
                               beat, extra_env)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
