"""Fixtures for the operations tests: migrated apps, a private redis-server, and a listener that
accepts connections and never answers (a hung database or Redis)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade

from campaign import create_app
from campaign.extensions import db
from tests.support import base_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port whose listener completes the TCP handshake (the backlog does) and then never
    says a word: a database or Redis that hangs, not one that refuses."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield int(listener.getsockname()[1])
    listener.close()


@pytest.fixture
def make_migrated_app(tmp_path: Path, smtp_port: int) -> Iterator[Callable[..., Flask]]:
    """An app on a fresh SQLite file brought to head with the real migrations (alembic_version
    included, as `flask db upgrade` leaves it)."""
    built: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        app = create_app(base_config(f"sqlite:///{tmp_path / f'migrated-{len(built)}.db'}", smtp_port,
                                     **overrides))
        with app.app_context():
            upgrade()
        built.append(app)
        return app

    yield factory
    for app in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, stopped at the end."""

    def __init__(self, log_path: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed: apt-get install redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             *args], stdout=self.log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("private redis-server did not start:\n"
                                       + log_path.read_text(errors="replace")) from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(started)}.log", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
