"""Helpers the tests share: service locations, app configs, and what a browser would do."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BASE_URL = "http://campaign.test"

# One set of keys per test process; worker subprocesses get them through the environment.
KEYS = {
    "SECRET_KEY": "test-secret-key-" + Fernet.generate_key().decode(),
    "SIGNER_DATA_KEYS": Fernet.generate_key().decode(),
    "BLIND_INDEX_KEY": "test-blind-index-" + Fernet.generate_key().decode(),
}


def xdist_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


def base_config(database_url: str, smtp_port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "CAMPAIGN_ENV": "testing",
        "BASE_URL": BASE_URL,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "memory://",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp_port,
        "MAIL_TIMEOUT": 5.0,
        # Flask-Mail suppresses sending when TESTING is on; the tests want the real SMTP path.
        "MAIL_SUPPRESS_SEND": False,
        "MAIL_DEFAULT_SENDER": "Campaign <no-reply@campaign.test>",
        "OUTBOX_BACKOFF_BASE": 1,
        "OUTBOX_SWEEP_GRACE": 0.0,
        # The signing path's bot checks (issue 6) would hold the many quick signatures from one
        # loopback address that tests send; tests/security switches them on where it tests them.
        "SIGNING_IP_BURST": "",
        "SIGNING_DOMAIN_BURST": "",
        "SIGNING_MIN_FILL_SECONDS": 0,
        "SIGNING_RATELIMIT_PER_IP": "",
        "SIGNING_RATELIMIT_PER_PETITION": "",
        **KEYS,
    }
    config.update(overrides)
    return config


def env_for(config: dict[str, Any]) -> dict[str, str]:
    """The environment that makes a subprocess (a Celery worker) build the same app."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CAMPAIGN_"))}
    for key, value in config.items():
        if isinstance(value, (str, int, float, bool)):
            env[key] = str(value)
    return env


_TOKEN = re.compile(r'name="form_token" type="hidden" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CONFIRM_LINK = re.compile(r"http://campaign\.test(/confirm/[A-Za-z0-9._-]+)")


def form_token(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "the page has no sign form token"
    return match.group(1)


def sign(client: Any, slug: str = "g20-chechnya", **fields: Any) -> Any:
    """GET the petition page, take its form token, POST a signature, as a browser does."""
    page = client.get(f"/petitions/{slug}")
    data = {"name": "Ada Lovelace", "email": "ada@example.com", "country": "DE",
            "form_token": form_token(page.get_data(as_text=True))}
    data.update(fields)
    return client.post(f"/petitions/{slug}/sign", data=data)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def confirm_path(message: EmailMessage) -> str:
    match = CONFIRM_LINK.search(text_of(message))
    assert match, "no confirmation link in the email"
    return match.group(1)


def confirm(client: Any, path: str) -> Any:
    """Open the link and press the button, with the page's own CSRF token."""
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, "the confirm page has no button form"
    return client.post(path, data={"csrf_token": match.group(1)})


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; fail with a clear message if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def deliver_due(app: Any) -> dict[str, int]:
    """Run the worker's send code in this process for every due outbox row."""
    from campaign.extensions import db
    from campaign.services.outbox import deliver, due_emails

    results: dict[str, int] = {}
    with app.app_context():
        for email_id, _kind in due_emails(db.session, limit=10_000):
            outcome = deliver(db.session, email_id)
            results[outcome] = results.get(outcome, 0) + 1
        db.session.remove()
    return results
