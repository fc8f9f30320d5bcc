"""Logs: JSON or text lines with a request id that follows a request into its Celery tasks, and no
signer's name, email address or link token in any line of a whole run."""

from __future__ import annotations

import http.cookiejar
import json
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from campaign import create_app
from campaign.config import ConfigError
from campaign.observability import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    current_request_id,
    task_context,
    well_formed,
)
from tests.support import base_config, confirm, confirm_path, deliver_due, sign, text_of, wait_for

SIGNERS = [
    ("Zuleika Quixotebloom", "zuleika.quixotebloom@example.org"),
    ("Ильяс Хатуевский", "ilyas.khatuevsky@example.net"),
    ("Oisín Ó Fearghaílín", "oisin+petition@example.com"),
]
WELL_FORMED_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def secrets_of(tokens: list[str]) -> list[str]:
    """Everything that must never appear: full names and their parts, addresses and their local
    parts, and each token whole and its signature part."""
    found: list[str] = []
    for name, email in SIGNERS:
        found += [name, *(part for part in name.split() if len(part) > 3), email, email.split("@")[0]]
    for token in tokens:
        found += [token, token.rsplit(".", 1)[-1]]
    return found


# --- formats and ids ------------------------------------------------------------------------------

def _record(message: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("campaign.test", logging.WARNING, __file__, 1, message, args, exc_info)
    record.request_id = WELL_FORMED_ID
    return record


def test_json_lines_carry_a_fixed_set_of_fields_and_redact_token_paths():
    record = _record("opened %s", "/confirm/eyJzIjo1fQ.abc.def?x=1", exc=True)
    record.data = {"args": "[secret]"}  # what Celery passes as `extra`: never written
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "pid", "exception"}
    assert entry["message"] == "opened /confirm/[redacted]?x=1"
    assert entry["request_id"] == WELL_FORMED_ID
    assert "ValueError: boom" in entry["exception"]
    assert "[secret]" not in line and "\n" not in line


def test_text_lines_are_readable_with_the_request_id():
    line = TextFormatter().format(_record("sent email %s", 7))
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING \[{WELL_FORMED_ID}\] "
                        r"campaign.test: sent email 7", line), line


def test_log_settings_are_checked(tmp_path, smtp_port):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        create_app(base_config(url, smtp_port, LOG_FORMAT="yaml"))
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        create_app(base_config(url, smtp_port, LOG_LEVEL="LOUD"))


@pytest.mark.parametrize(("given", "kept"), [
    (WELL_FORMED_ID, True),
    ("123e4567-e89b-12d3-a456-426614174000", True),
    ("ada@example.com", False),          # an address
    ("AdaLovelace", False),              # a name
    ("eyJzIjo1fQ.Zx1.AbC", False),       # a token
    ("abc", False),                      # too short
    ("f" * 65, False),                   # too long
])
def test_only_hex_request_ids_are_taken_from_outside(given, kept):
    assert (well_formed(given) == given) is kept


def test_request_id_is_sent_along_with_the_task_and_not_answered(app, demo, monkeypatch):
    published: list[dict[str, Any]] = []
    celery = app.extensions["celery"]
    monkeypatch.setattr(celery, "send_task", lambda name, **kw: published.append(kw))
    client = app.test_client()

    response = sign(client, email="headers@example.org")
    assert response.status_code == 303
    generated = published[-1]["headers"]["request_id"]
    assert well_formed(generated)
    # Not sent back: the sign form's answers stay byte-identical (tests/test_sign_flow.py).
    assert "X-Request-ID" not in response.headers

    client.environ_base["HTTP_X_REQUEST_ID"] = WELL_FORMED_ID
    assert sign(client, email="headers2@example.org").status_code == 303
    assert published[-1]["headers"] == {"request_id": WELL_FORMED_ID}

    client.environ_base["HTTP_X_REQUEST_ID"] = "headers3@example.org"
    assert sign(client, email="headers3@example.org").status_code == 303
    replaced = published[-1]["headers"]["request_id"]
    assert well_formed(replaced) and replaced not in {generated, WELL_FORMED_ID}


def test_a_task_logs_with_the_request_id_it_was_sent():
    class Request:
        id = "task-1"
        request_id = WELL_FORMED_ID

    class FromHeaders:
        id = "task-2"
        headers = {"request_id": "ada@example.org"}  # not well-formed: replaced

    stamp = ContextFilter()
    record = _record("inside")
    del record.request_id
    with task_context(Request(), "outbox.send") as request_id:
        assert current_request_id() == WELL_FORMED_ID
        stamp.filter(record)
    assert request_id == WELL_FORMED_ID
    assert (record.request_id, record.task_name, record.task_id) == (WELL_FORMED_ID, "outbox.send", "task-1")
    assert current_request_id() is None  # reset after the task
    with task_context(FromHeaders(), "outbox.sweep") as own:
        assert well_formed(own) and own != "ada@example.org"


# --- the whole run, greped --------------------------------------------------------------------------

class Capture(logging.Handler):
    """Keeps everything about every record: the formatted message, the raw msg and args, extras,
    exception text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mail.log"):
            return  # the test's SMTP server: it stands for the recipient's mail server, not the app
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        exception = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.texts.append(f"{record.name} {record.levelname} {message} {exception} {record.__dict__!r}")


@pytest.fixture
def capture_everything() -> Iterator[Capture]:
    """The root logger and the noisy libraries at DEBUG (SQLAlchemy at INFO: its statements)."""
    handler = Capture()
    root = logging.getLogger()
    names = {"": logging.DEBUG, "werkzeug": logging.DEBUG, "celery": logging.DEBUG, "kombu": logging.DEBUG,
             "campaign": logging.DEBUG, "sqlalchemy.engine": logging.INFO, "sqlalchemy.pool": logging.DEBUG,
             "flask_wtf": logging.DEBUG, "urllib3": logging.DEBUG}
    saved = {name: logging.getLogger(name).level for name in names}
    root.addHandler(handler)
    for name, level in names.items():
        logging.getLogger(name).setLevel(level)
    yield handler
    root.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


class Browser:
    """A real HTTP client on a real werkzeug server, so the access log lines are really written."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def sign(self, name: str, email: str, slug: str = "g20-chechnya") -> int:
        _, page = self.get(f"/petitions/{slug}")
        token = re.search(r'name="form_token" type="hidden" value="([^"]+)"', page)
        assert token, "no form token on the petition page"
        status, _ = self.post(f"/petitions/{slug}/sign", {
            "name": name, "email": email, "country": "DE", "form_token": token.group(1)})
        return status

    def confirm(self, path: str) -> int:
        _, page = self.get(path)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf, "no button form on the confirm page"
        status, _ = self.post(path, {"csrf_token": csrf.group(1)})
        return status


def test_a_full_run_logs_no_name_email_or_token(make_app, mailbox, capture_everything, capsys):
    """Sign (three signers, one twice, one with a typo first), deliver through the real outbox code,
    open and confirm each link, and try a forged link; then grep every log record and every line
    the app's handler wrote. Shown to fail once by taking the access log's token filter off
    (campaign.logs.install_redaction): the confirm paths then appear in werkzeug's lines."""
    from campaign.extensions import db
    from campaign.services.demo import seed_demo

    app = make_app(LOG_LEVEL="DEBUG")
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
    logging.getLogger().setLevel(logging.DEBUG)  # create_app set the root to LOG_LEVEL; keep DEBUG
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    browser = Browser(f"http://127.0.0.1:{server.server_port}")
    try:
        name, email = SIGNERS[0]
        assert browser.sign(name, email.replace("@", "@@")) == 400  # a typo: the form comes back
        for name, email in SIGNERS:
            assert browser.sign(name, email) == 200  # the redirect to "check your email", followed
        assert deliver_due(app) == {"sent": len(SIGNERS)}
        paths = [confirm_path(message) for message in mailbox.messages]
        for path in paths:
            assert browser.confirm(path) == 200  # confirmed, and the thank-you page followed
        assert browser.sign(*SIGNERS[1]) == 200  # again: an "already signed" email
        deliver_due(app)  # that, and any letters to officials the confirmations queued
        assert [m for m in mailbox.messages if SIGNERS[1][1] in str(m["To"])][1:]
        forged = paths[0][:-4] + "AAAA"
        assert browser.get(forged)[0] == 404
    finally:
        server.shutdown()
        thread.join(10)
    tokens = [path.rsplit("/", 1)[1] for path in [*paths, forged]]
    written = capsys.readouterr()
    everything = "\n".join(capture_everything.texts) + written.out + written.err

    # The capture saw the run: access lines (redacted), SQL statements, the app's own lines.
    assert "POST /petitions/g20-chechnya/sign" in everything
    assert "/confirm/[redacted]" in everything
    assert "INSERT INTO signatures" in everything
    assert len(capture_everything.texts) > 50
    leaks = [secret for secret in secrets_of(tokens) if secret in everything]
    assert leaks == []
    assert all(text_of(m) for m in mailbox.messages)  # the mail did carry them: they were real


# --- a real worker -----------------------------------------------------------------------------------

@pytest.mark.integration
def test_worker_log_carries_the_request_id_and_no_signer_data(make_pg_app, pg_url, smtp_port, redis_url,
                                                              start_worker, mailbox):
    """A `celery -A worker worker` process at DEBUG with JSON lines: the send task's line carries
    the id of the request that queued it, and nothing in the whole log names a signer. Shown to
    fail once with the send task logging the decrypted address at DEBUG."""
    import redis

    from campaign.extensions import db
    from campaign.services.demo import seed_demo

    redis.Redis.from_url(redis_url, socket_timeout=3).flushdb()
    overrides = {"CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url}
    app = make_pg_app(**overrides)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
    worker = start_worker(base_config(pg_url, smtp_port, **overrides), LOG_LEVEL="DEBUG", LOG_FORMAT="json")
    client = app.test_client()
    request_ids = []
    for n, (name, email) in enumerate(SIGNERS):
        request_id = f"{n + 1:02d}" + WELL_FORMED_ID[2:]
        client.environ_base["HTTP_X_REQUEST_ID"] = request_id
        assert sign(client, name=name, email=email).status_code == 303
        request_ids.append(request_id)
    client.environ_base.pop("HTTP_X_REQUEST_ID")
    wait_for(lambda: len(mailbox.messages) == len(SIGNERS), timeout=40)
    paths = [confirm_path(message) for message in mailbox.messages]
    for path in paths:
        assert confirm(client, path).status_code == 303

    log_path = Path(worker.log_path)
    wait_for(lambda: log_path.read_text(errors="replace").count('"email ') >= len(SIGNERS), timeout=20)
    worker.stop()
    log = log_path.read_text(errors="replace")
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    sends = [e for e in entries if e["logger"] == "worker.tasks" and e["message"].endswith(": sent")]
    # Each sign request's confirmation email was sent under that request's id (letters that the
    # confirmations queued carry the confirm requests' ids).
    for request_id in request_ids:
        assert [e["request_id"] for e in sends].count(request_id) == 1, request_id
    assert all(e["task"] == "outbox.send" and e["task_id"] for e in sends)
    assert any(e["level"] == "DEBUG" for e in entries)  # the worker really logged at DEBUG
    tokens = [path.rsplit("/", 1)[1] for path in paths]
    leaks = [secret for secret in secrets_of(tokens) if secret in log]
    assert leaks == []
