"""Webhooks against a real HTTP receiver on loopback: signed bodies that verify, no signer data
unless opted in, retries with a next-attempt time then success, switching off after repeated
failures, SSRF refusals (at registration and again at send time, against DNS rebinding), the
milestone and delivery.sent events, and a real Celery worker with its sweep doing the sending."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from campaign import create_app
from campaign.extensions import db
from campaign.models import AuditEvent, Campaign, Petition, User, Webhook, WebhookCall
from campaign.models.base import utcnow
from campaign.services import webhooks
from campaign.services.demo import DEMO_ORGANIZER_EMAIL, DEMO_PETITION_SLUG, seed_demo
from campaign.services.organizing import OrganizingError
from tests.api.organizer_support import add_signer
from tests.api.receiver import Receiver, start_receiver
from tests.organize.conftest import FAST_HASHING
from tests.support import base_config, deliver_due, wait_for

LOOPBACK = {"WEBHOOK_ALLOW_LOOPBACK": True, "WEBHOOK_BACKOFF_BASE": 0, **FAST_HASHING}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


def _demo(app: Flask) -> tuple[int, int]:
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        petition = db.session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
        owner = db.session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
        assert petition is not None and owner is not None
        return petition.id, owner.id


def _register(app: Flask, url: str, events: list[str], fields: list[str] | None = None) -> tuple[int, str]:
    with app.app_context():
        owner = db.session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
        campaign = db.session.scalars(select(Campaign)).first()
        hook, secret = webhooks.register_webhook(db.session, owner, campaign, url, events, fields or [])
        db.session.commit()
        return hook.id, secret


def _sign(app: Flask, name: str, email: str, consent: bool = False, confirm: bool = True) -> int:
    with app.app_context():
        petition = db.session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
        signature_id = add_signer(petition, name, email, "DE", consent, confirm)
        db.session.commit()
        return signature_id


def _send_due(app: Flask, rounds: int = 20) -> list[str]:
    """What a worker and the sweep do: send every due call, until none is due."""
    outcomes: list[str] = []
    with app.app_context():
        for _ in range(rounds):
            due = webhooks.due_calls(db.session, 100)
            if not due:
                break
            outcomes += [webhooks.send_call(db.session, call_id) for call_id in due]
        db.session.remove()
    return outcomes


def _calls(app: Flask) -> list[WebhookCall]:
    with app.app_context():
        calls = list(db.session.scalars(select(WebhookCall).order_by(WebhookCall.id)))
        db.session.expunge_all()
        return calls


# --- signing and privacy ---------------------------------------------------------------------------

def test_signature_confirmed_is_signed_verifiable_and_names_nobody(make_app, receiver):
    app = make_app(**LOOPBACK)
    petition_id, _owner = _demo(app)
    _hook_id, secret = _register(app, receiver.url, ["signature.confirmed"])
    assert secret.startswith("whsec_")
    _sign(app, "Pending Person", "pending@example.net", confirm=False)
    assert _calls(app) == []  # only a confirmation is an event
    signature_id = _sign(app, "Zarema Example", "zarema@example.net", consent=True)
    assert _send_due(app) == ["sent"]

    [got] = receiver.requests
    assert got.path == "/hooks/campaign?source=test"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Campaign-Event"] == "signature.confirmed"
    assert webhooks.verify_signature(secret, got.headers["Campaign-Signature"], got.body)
    # A changed body, another secret or an old timestamp does not verify.
    assert not webhooks.verify_signature(secret, got.headers["Campaign-Signature"], got.body + b" ")
    assert not webhooks.verify_signature("whsec_other", got.headers["Campaign-Signature"], got.body)
    assert not webhooks.verify_signature(secret, got.headers["Campaign-Signature"], got.body,
                                         now=int(got.headers["Campaign-Signature"][2:12]) + 3600)
    body = json.loads(got.body)
    assert body["event"] == "signature.confirmed" and body["id"] == got.headers["Campaign-Webhook-Id"]
    assert body["data"] == {"petition": {"id": petition_id, "slug": DEMO_PETITION_SLUG},
                            "signature": {"id": signature_id}, "signature_count": 1}
    assert b"Zarema" not in got.body and b"zarema@" not in got.body and b"DE" not in got.body
    [call] = _calls(app)
    assert call.status == "sent" and call.response_status == 200 and call.attempts == 1
    assert "Zarema" not in call.data and "zarema" not in call.data


def test_signer_fields_only_when_opted_in_and_emails_only_with_consent(make_app, receiver):
    app = make_app(**LOOPBACK)
    _demo(app)
    hook_id, secret = _register(app, receiver.url, ["signature.confirmed"], ["name", "email"])
    _sign(app, "Zarema Example", "zarema@example.net", consent=True)
    _sign(app, "Kim Muster", "kim@example.net", consent=False)
    assert _send_due(app) == ["sent", "sent"]
    bodies = [json.loads(r.body)["data"]["signature"] for r in receiver.requests]
    assert {b.get("name") for b in bodies} == {"Zarema Example", "Kim Muster"}
    assert [b.get("email") for b in bodies if b["name"] == "Kim Muster"] == [None]
    assert [b.get("email") for b in bodies if b["name"] == "Zarema Example"] == ["zarema@example.net"]
    assert all("country" not in b for b in bodies)
    for got in receiver.requests:
        assert webhooks.verify_signature(secret, got.headers["Campaign-Signature"], got.body)
    # The database never holds the names: the body is built at send time.
    assert all("Zarema" not in c.data for c in _calls(app))
    with app.app_context():
        opted = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.signer_fields"))
        assert opted is not None and opted.object_id == hook_id and "name, email" in opted.summary


# --- retries and switching off ---------------------------------------------------------------------

def test_retries_with_a_next_attempt_time_then_success(make_app, receiver):
    app = make_app(**LOOPBACK | {"WEBHOOK_BACKOFF_BASE": 60})
    _demo(app)
    _register(app, receiver.url, ["signature.confirmed"])
    _sign(app, "Zarema Example", "zarema@example.net")
    receiver.statuses = [500, 503]
    assert _send_due(app) == ["retry"]
    [call] = _calls(app)
    # A row with a next-attempt time (30-60 s: the backoff's upper half), not a broker countdown.
    # (The lower bound leaves this slow machine 10 s between the attempt and the check.)
    assert call.status == "queued" and call.response_status == 500 and call.last_error == "HTTP 500"
    assert utcnow() + timedelta(seconds=20) < call.next_attempt_at < utcnow() + timedelta(seconds=61)
    assert _send_due(app) == []  # not due yet
    with app.app_context():
        db.session.execute(WebhookCall.__table__.update().values(next_attempt_at=utcnow()))
        db.session.commit()
        hook = db.session.scalars(select(Webhook)).one()
        assert hook.consecutive_failures == 1
    assert _send_due(app, rounds=1) == ["retry"]
    with app.app_context():
        db.session.execute(WebhookCall.__table__.update().values(next_attempt_at=utcnow()))
        db.session.commit()
    assert _send_due(app) == ["sent"]
    [call] = _calls(app)
    assert call.status == "sent" and call.attempts == 3
    assert [r.headers["Campaign-Webhook-Id"] for r in receiver.requests] == [f"whc_{call.id}"] * 3
    with app.app_context():
        assert db.session.scalars(select(Webhook)).one().consecutive_failures == 0


def test_a_failing_webhook_is_switched_off_after_n_failures(make_app, receiver):
    app = make_app(**LOOPBACK | {"WEBHOOK_DISABLE_AFTER": 3, "WEBHOOK_MAX_ATTEMPTS": 10})
    _demo(app)
    hook_id, _secret = _register(app, receiver.url, ["signature.confirmed"])
    receiver.statuses = [500] * 100
    for n in range(3):
        _sign(app, f"Signer {n}", f"signer{n}@example.net")
    outcomes = _send_due(app)
    assert outcomes.count("retry") == 3 and len(receiver.requests) == 3
    calls = _calls(app)
    assert {c.status for c in calls} == {"cancelled"}
    with app.app_context():
        hook = db.session.get(Webhook, hook_id)
        assert not hook.active and hook.consecutive_failures == 3
        assert "3 failed attempts" in hook.disabled_reason
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.auto_disabled"))
        assert event is not None and event.object_id == hook_id
    # Switched off, new events queue nothing; switched on again, they do.
    _sign(app, "Later", "later@example.net")
    assert len(_calls(app)) == 3
    with app.app_context():
        owner = db.session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
        webhooks.set_active(db.session, owner, db.session.get(Webhook, hook_id), True)
        db.session.commit()
    receiver.statuses = []
    _sign(app, "After", "after@example.net")
    assert _send_due(app) == ["sent"]


# --- SSRF ------------------------------------------------------------------------------------------

REFUSED_URLS = [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/hook", "http://10.0.0.1/hook",
    "http://192.168.1.1/", "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/",
    "http://224.0.0.1/", "ftp://example.org/hook", "file:///etc/passwd", "javascript:alert(1)",
    "https://user:secret@example.org/hook", "http://no-such-host.invalid/hook", "https:///nohost",
    "http://example.org:99999/", "http://exa mple.org/"]


def test_registration_refuses_urls_that_are_not_public_http(make_app):
    app = make_app(**FAST_HASHING)
    _demo(app)
    for url in REFUSED_URLS:
        with pytest.raises(OrganizingError) as refused:
            _register(app, url, ["signature.confirmed"])
        assert refused.value.field == "url", url
    with app.app_context():
        assert db.session.scalars(select(Webhook)).all() == []


def test_send_time_check_refuses_loopback_when_not_allowed(make_app, receiver):
    """A webhook on loopback (registered while it was allowed) is refused at send time, and the
    receiver gets nothing."""
    allowed = make_app(**LOOPBACK)
    _demo(allowed)
    _register(allowed, receiver.url, ["signature.confirmed"])
    url = allowed.config["DATABASE_URL"]
    strict = make_app(**FAST_HASHING, DATABASE_URL=url)
    _sign(strict, "Zarema Example", "zarema@example.net")
    assert _send_due(strict) == ["failed"]
    [call] = _calls(strict)
    assert call.status == "failed" and call.last_error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
    assert receiver.requests == []


def test_dns_rebinding_is_caught_at_send_time(make_app, receiver, monkeypatch):
    app = make_app(**FAST_HASHING)
    _demo(app)
    real = socket.getaddrinfo
    answers = {"hooks.example.org": "93.184.216.34"}

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    _register(app, "http://hooks.example.org/hook", ["signature.confirmed"])  # public when registered
    answers["hooks.example.org"] = "127.0.0.1"  # ... and loopback when called
    _sign(app, "Zarema Example", "zarema@example.net")
    assert _send_due(app) == ["failed"]
    [call] = _calls(app)
    assert "resolves to 127.0.0.1, which is not a public address" in call.last_error
    assert receiver.requests == []


def test_loopback_cannot_be_allowed_in_production():
    from campaign.config import ConfigError

    config = base_config("postgresql://x@127.0.0.1/x", 25, CAMPAIGN_ENV="production",
                         REDIS_URL="redis://127.0.0.1:6379/0", WEBHOOK_ALLOW_LOOPBACK=True)
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOW_LOOPBACK"):
        create_app(config)


# --- milestones and deliveries ---------------------------------------------------------------------

def test_milestones_fire_once_each_including_the_goal(make_app, receiver):
    app = make_app(**LOOPBACK | {"WEBHOOK_MILESTONES": "1,3"})
    petition_id, _owner = _demo(app)
    with app.app_context():
        db.session.get(Petition, petition_id).goal = 2
        db.session.commit()
    _register(app, receiver.url, ["petition.milestone"])
    for n in range(4):
        _sign(app, f"Signer {n}", f"signer{n}@example.net")
    assert _send_due(app) == ["sent"] * 3
    events = [json.loads(r.body) for r in receiver.requests]
    assert {e["event"] for e in events} == {"petition.milestone"}
    assert sorted((e["data"]["milestone"], e["data"]["goal_reached"]) for e in events) == [
        (1, False), (2, True), (3, False)]


def test_delivery_sent_is_told_once_the_mail_server_accepted_it(make_app, receiver, mailbox):
    from campaign.services.deliveries import deliver_now

    app = make_app(**LOOPBACK)
    petition_id, owner_id = _demo(app)
    _register(app, receiver.url, ["delivery.sent"])
    _sign(app, "Zarema Example", "zarema@example.net")
    assert _calls(app) == []  # not subscribed to signature.confirmed
    with app.app_context():
        made = deliver_now(db.session, db.session.get(User, owner_id), db.session.get(Petition, petition_id),
                           None, "nonce-1")
        delivery_ids = {d.id for d in made}
        db.session.commit()
    assert _calls(app) == []  # queued is not sent
    deliver_due(app)
    assert len(mailbox.messages) >= len(delivery_ids)
    assert _send_due(app) == ["sent"] * len(delivery_ids)
    told = [json.loads(r.body)["data"] for r in receiver.requests]
    assert {t["delivery"]["id"] for t in told} == delivery_ids
    assert all(t["delivery"]["kind"] == "now" and "email" not in t["target"] for t in told)
    assert all(b"@" not in r.body for r in receiver.requests)


# --- a real worker ---------------------------------------------------------------------------------

@pytest.mark.integration
def test_a_celery_worker_sends_calls_and_its_sweep_retries(tmp_path, smtp_port, redis_url, start_worker,
                                                           receiver):
    redis.Redis.from_url(redis_url, socket_timeout=3).flushdb()
    config = base_config(f"sqlite:///{tmp_path / 'webhooks.db'}", smtp_port, CELERY_BROKER_URL=redis_url,
                         REDIS_URL=redis_url, WEBHOOK_ALLOW_LOOPBACK=True, WEBHOOK_BACKOFF_BASE=1,
                         WEBHOOK_SWEEP_INTERVAL=0.5, **FAST_HASHING)
    app = create_app(config)
    with app.app_context():
        db.create_all()
    try:
        _demo(app)
        _hook_id, secret = _register(app, receiver.url, ["signature.confirmed"])
        start_worker(config, queues="bulk,maintenance", beat=True)
        receiver.statuses = [500]
        _sign(app, "Zarema Example", "zarema@example.net")  # after commit: webhooks.send is published
        wait_for(lambda: any(c.status == "sent" for c in _calls(app)), timeout=60)
        [call] = _calls(app)
        assert call.attempts == 2 and len(receiver.requests) == 2
        assert webhooks.verify_signature(secret, receiver.requests[-1].headers["Campaign-Signature"],
                                         receiver.requests[-1].body)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_signing_secrets_follow_key_rotation_and_an_unreadable_one_fails_cleanly(make_app, receiver):
    from cryptography.fernet import Fernet

    from campaign.services.key_rotation import encrypted_columns, rotate_signer_keys

    assert ("webhooks", "secret_encrypted") in {(t.name, c) for t, c in encrypted_columns()}
    app = make_app(**LOOPBACK)
    _demo(app)
    _hook_id, secret = _register(app, receiver.url, ["signature.confirmed"])
    url, old_key = app.config["DATABASE_URL"], app.config["SIGNER_DATA_KEYS"]
    new_key = Fernet.generate_key().decode()
    rotating = make_app(**LOOPBACK, DATABASE_URL=url, SIGNER_DATA_KEYS=f"{new_key},{old_key}")
    with rotating.app_context():
        assert rotate_signer_keys(db.session).per_column["webhooks.secret_encrypted"] == 1
    rotated = make_app(**LOOPBACK, DATABASE_URL=url, SIGNER_DATA_KEYS=new_key)
    _sign(rotated, "Zarema Example", "zarema@example.net")
    assert _send_due(rotated) == ["sent"]
    assert webhooks.verify_signature(secret, receiver.requests[0].headers["Campaign-Signature"],
                                     receiver.requests[0].body)
    # Without the key that encrypted it, the call fails with a reason instead of crashing the worker.
    lost = make_app(**LOOPBACK, DATABASE_URL=url, SIGNER_DATA_KEYS=Fernet.generate_key().decode())
    with lost.app_context():
        petition = db.session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
        webhooks.queue_event(db.session, petition.campaign_id, "signature.confirmed", "manual:1",
                             {"petition": {"id": petition.id}})
        db.session.commit()
    assert _send_due(lost) == ["failed"]
    assert _calls(lost)[-1].last_error == "the signing secret cannot be decrypted with SIGNER_DATA_KEYS"
    assert len(receiver.requests) == 1


def test_old_finished_calls_leave_the_log(make_app, receiver):
    app = make_app(**LOOPBACK | {"WEBHOOK_LOG_DAYS": 7})
    _demo(app)
    _register(app, receiver.url, ["signature.confirmed"])
    for n in range(3):
        _sign(app, f"Signer {n}", f"signer{n}@example.net")
    assert _send_due(app, rounds=1)[:2] == ["sent", "sent"]
    with app.app_context():
        first, second, third = db.session.scalars(select(WebhookCall).order_by(WebhookCall.id)).all()
        first.created_at = second.created_at = third.created_at = utcnow() - timedelta(days=8)
        third.status = "queued"  # not finished: kept, whatever its age
        second.created_at = utcnow() - timedelta(days=6)
        db.session.commit()
        assert webhooks.forget_old_calls(db.session) == 1
        db.session.commit()
        assert [c.id for c in db.session.scalars(select(WebhookCall).order_by(WebhookCall.id))] == [second.id, third.id]


def test_https_calls_pin_the_checked_address_and_verify_the_hosts_certificate(make_app, tmp_path, monkeypatch):
    """The request goes to the address that was checked, yet TLS still names and verifies the host:
    SNI and the certificate are for hooks.example.org, and a certificate for another name fails."""
    from tests.api.receiver import make_certificates, start_tls_receiver

    ca, cert, key = make_certificates(tmp_path, "hooks.example.org")
    monkeypatch.setattr(webhooks.certifi, "where", lambda: ca)
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in {"hooks.example.org", "other.example.org"}:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    app = make_app(**LOOPBACK)
    _demo(app)
    for receiver, server_names in start_tls_receiver(cert, key):
        port = receiver.url.split(":")[2].split("/")[0]
        _hook_id, secret = _register(app, f"https://hooks.example.org:{port}/hook", ["signature.confirmed"])
        _sign(app, "Zarema Example", "zarema@example.net")
        assert _send_due(app) == ["sent"]
        [got] = receiver.requests
        assert server_names == ["hooks.example.org"]
        assert got.headers["Host"] == f"hooks.example.org:{port}"
        assert webhooks.verify_signature(secret, got.headers["Campaign-Signature"], got.body)
        # The same server under a name its certificate does not carry: refused by TLS, nothing sent.
        with app.app_context():
            hook = db.session.scalars(select(Webhook)).one()
            hook.url = f"https://other.example.org:{port}/hook"
            db.session.commit()
        _sign(app, "Kim Muster", "kim@example.net")
        assert _send_due(app, rounds=1) == ["retry"]
        assert "SSLError: hostname 'other.example.org' doesn't match" in _calls(app)[-1].last_error
        assert len(receiver.requests) == 1
