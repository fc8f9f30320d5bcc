"""Logs for operators: JSON lines in production, readable text in development, every line with the
request id of the request (or the Celery task) that wrote it. A request's id travels to the tasks
it publishes in a message header, so one id follows a signature from the form to its email.

No line names a signer: the formatters write a fixed set of fields (never a record's `extra`,
where Celery puts task arguments) and redact link-token paths from every line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Flask

from campaign.config import ConfigError
from campaign.logs import redact

REQUEST_ID_HEADER = "X-Request-ID"
# Only hex and hyphens (UUIDs, nginx's $request_id): an id chosen by a client can then never carry
# a name, an address or a link token into the logs.
_WELL_FORMED = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{7,63}")

_request_id: ContextVar[str | None] = ContextVar("campaign_request_id", default=None)
_task: ContextVar[tuple[str, str] | None] = ContextVar("campaign_task", default=None)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def new_request_id() -> str:
    return uuid.uuid4().hex


def well_formed(value: str | None) -> str | None:
    """The id if it is one we accept from outside, else None."""
    if value and _WELL_FORMED.fullmatch(value):
        return value
    return None


def current_request_id() -> str | None:
    return _request_id.get()


def task_headers() -> dict[str, str]:
    """Message headers for a task published now: the current request id, if there is one."""
    request_id = _request_id.get()
    return {"request_id": request_id} if request_id else {}


@contextmanager
def task_context(task_request: Any, task_name: str) -> Iterator[str]:
    """Run a task body with the request id its publisher sent (or a new one) in every log line.

    Tasks that no request caused (beat's sweep) get an id of their own, which the emails they
    publish then carry.
    """
    sent = getattr(task_request, "request_id", None)
    if sent is None:
        headers = getattr(task_request, "headers", None) or {}
        sent = headers.get("request_id") if isinstance(headers, dict) else None
    request_id = well_formed(sent if isinstance(sent, str) else None) or new_request_id()
    id_token = _request_id.set(request_id)
    task_token = _task.set((task_name, str(getattr(task_request, "id", None) or "-")))
    try:
        yield request_id
    finally:
        _task.reset(task_token)
        _request_id.reset(id_token)


# --- formatting -------------------------------------------------------------------------------

class ContextFilter(logging.Filter):
    """Stamp each record with the request id and task of the context that logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        task = _task.get()
        record.task_name, record.task_id = task if task else ("", "")
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        return f"{record.msg!s} (unformattable arguments)"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with a fixed set of fields and token paths redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
        }
        if getattr(record, "task_name", ""):
            entry["task"] = getattr(record, "task_name", "")
            entry["task_id"] = getattr(record, "task_id", "")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL [request id] logger: message`, for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (pytest swaps it per test; gunicorn and
    Celery keep the process's own)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def log_format(config: Any) -> str:
    chosen = (config.get("LOG_FORMAT") or "").strip().lower()
    if not chosen:
        return "json" if config.get("CAMPAIGN_ENV") == "production" else "text"
    if chosen not in {"json", "text"}:
        raise ConfigError(f"LOG_FORMAT must be json or text, not {config.get('LOG_FORMAT')!r}")
    return chosen


def log_level(config: Any) -> int:
    name = str(config.get("LOG_LEVEL") or "INFO").strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, not {config.get('LOG_LEVEL')!r}")
    return int(logging.getLevelName(name))


def configure_logging(app: Flask) -> None:
    """One handler on the root logger, formatted per LOG_FORMAT; idempotent (tests build many apps).

    Celery is told to leave logging alone (its setup_logging signal has a receiver), so workers
    and beat log through the same handler, at LOG_LEVEL.
    """
    from flask.logging import default_handler

    formatter: logging.Formatter = JsonFormatter() if log_format(app.config) == "json" else TextFormatter()
    level = log_level(app.config)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Flask's own handler would print the app's lines a second time, without the request id.
    app.logger.removeHandler(default_handler)
    # With the root at INFO, SQLAlchemy would log every statement, and aiosmtpd (the dev and test
    # SMTP sink, "mail.log") every recipient's address; either takes asking for.
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "mail.log"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    _keep_celery_off_the_root_logger()


def _celery_leaves_logging_alone(**_kwargs: Any) -> None:
    """A receiver of Celery's setup_logging: its presence tells Celery not to configure logging."""


def _keep_celery_off_the_root_logger() -> None:
    from celery.signals import setup_logging

    setup_logging.connect(_celery_leaves_logging_alone, weak=False, dispatch_uid="campaign.logging")


# --- requests -----------------------------------------------------------------------------------

def bind_request_id(header_value: str | None) -> tuple[str, Token[str | None]]:
    """Take a well-formed X-Request-ID, else a new id, for the current request's log lines."""
    request_id = well_formed(header_value) or new_request_id()
    return request_id, _request_id.set(request_id)


def release_request_id(token: Token[str | None]) -> None:
    # Torn down in another context (it should not happen): the id dies with that context.
    with contextlib.suppress(ValueError):
        _request_id.reset(token)
