"""/metrics: Prometheus text with the request, signature, outbox, queue and held-signature figures;
protected by a bearer token or loopback; fast with the database down; summed across gunicorn
workers in multiprocess mode."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from campaign import create_app
from campaign.extensions import db
from campaign.models import OutboundEmail, OutboxStatus, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.demo import seed_demo
from campaign.services.petitions import petition_by_slug
from tests.ops.conftest import free_port
from tests.support import ROOT, base_config, confirm_path, deliver_due, env_for, sign

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
TOKEN = "metrics-token-for-the-test-0123456789"


def scrape(app, **headers) -> str:
    response = app.test_client().get("/metrics", environ_base=LOOPBACK, headers=headers)
    assert response.status_code == 200, response.status_code
    assert response.content_type.startswith("text/plain; version=")
    return response.get_data(as_text=True)


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the exposition text, or None when there is no such sample."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# --- who may read it ----------------------------------------------------------------------------

def test_loopback_only_without_a_token_outside_production(app):
    client = app.test_client()
    assert client.get("/metrics", environ_base=LOOPBACK).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 404


def test_production_without_a_token_is_404_even_from_loopback(tmp_path, smtp_port):
    # Behind a proxy on the same machine every visitor would come from 127.0.0.1.
    app = create_app(base_config(f"sqlite:///{tmp_path / 'p.db'}", smtp_port, CAMPAIGN_ENV="production"))
    assert app.test_client().get("/metrics", environ_base=LOOPBACK).status_code == 404


def test_a_configured_token_is_required_from_everywhere(tmp_path, smtp_port):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'p.db'}", smtp_port, CAMPAIGN_ENV="production",
                                 METRICS_TOKEN=TOKEN))
    client = app.test_client()
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = client.get("/metrics", environ_base=LOOPBACK, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/metrics", environ_base=outside, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "campaign_http_requests_total" in response.get_data(as_text=True)


# --- what it says -------------------------------------------------------------------------------

def test_requests_by_endpoint_and_status_and_no_token_in_any_label(app, demo, mailbox):
    before = scrape(app)
    client = app.test_client()
    client.get("/petitions/g20-chechnya")
    client.get("/petitions/no-such-petition")
    client.get("/no/such/route")
    assert client.post("/confirm/not-a-token", data={}).status_code == 400  # refused by CSRF first
    assert sign(client, name="Metric Person", email="metric.person@example.org").status_code == 303
    assert deliver_due(app) == {"sent": 1}
    path = confirm_path(mailbox.messages[-1])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert csrf
    assert client.post(path, data={"csrf_token": csrf.group(1)}).status_code == 303
    after = scrape(app)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew("campaign_http_requests_total", endpoint="public.petition", method="GET", status="200") >= 2
    assert grew("campaign_http_requests_total", endpoint="public.petition", method="GET", status="404") == 1
    assert grew("campaign_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert grew("campaign_http_requests_total", endpoint="public.sign", method="POST", status="303") == 1
    assert grew("campaign_http_requests_total", endpoint="public.confirm_post", method="POST", status="400") == 1
    assert grew("campaign_http_requests_total", endpoint="public.confirm_post", method="POST", status="303") == 1
    assert grew("campaign_http_request_duration_seconds_count", endpoint="public.sign", method="POST") == 1
    assert grew("campaign_signatures_created_total") == 1
    assert grew("campaign_signatures_confirmed_total") == 1
    token = path.rsplit("/", 1)[1]
    assert token not in after and token.split(".")[-1] not in after
    assert "/confirm/" not in after

    # Signing again with the same address creates nothing, and a second confirm counts nothing.
    assert sign(client, name="Metric Person", email="metric.person@example.org").status_code == 303
    assert client.post(path, data={"csrf_token": csrf.group(1)}).status_code == 303
    again = scrape(app)
    assert value(again, "campaign_signatures_created_total") == value(after, "campaign_signatures_created_total")
    assert value(again, "campaign_signatures_confirmed_total") == value(
        after, "campaign_signatures_confirmed_total")


def _signature(session, petition_id: int, n: int, status: str) -> Signature:
    signature = Signature(petition_id=petition_id, name_encrypted=b"x", email_encrypted=b"x",
                          email_index=f"{n:064x}", country="DE", status=status)
    session.add(signature)
    session.flush()
    return signature


def test_outbox_backlog_ages_recent_sends_and_held_signatures(app, demo):
    now = utcnow()
    with app.app_context():
        petition = petition_by_slug(db.session, demo)
        assert petition is not None
        rows = [
            # kind, status, queued this long ago, due this long ago (negative: in the future), sent
            ("signature_confirmation", OutboxStatus.QUEUED, 600, 120, None),
            ("signature_confirmation", OutboxStatus.QUEUED, 30, -300, None),  # backing off
            ("signature_confirmation", OutboxStatus.SENDING, 10, 10, None),
            ("signature_confirmation", OutboxStatus.FAILED, 5000, 5000, None),
            ("signature_confirmation", OutboxStatus.SENT, 60, 60, 50),
            ("signature_already_confirmed", OutboxStatus.SENT, 70, 70, 65),
            ("signature_confirmation", OutboxStatus.SENT, 7200, 7200, 7100),  # outside the window
        ]
        for n, (kind, status, queued, due, sent) in enumerate(rows):
            db.session.add(OutboundEmail(
                idempotency_key=f"test:{n}", kind=kind, status=status, petition_id=petition.id,
                created_at=now - timedelta(seconds=queued), next_attempt_at=now - timedelta(seconds=due),
                sent_at=now - timedelta(seconds=sent) if sent is not None else None))
        for n, status in enumerate([SignatureStatus.HELD, SignatureStatus.HELD, SignatureStatus.PENDING]):
            _signature(db.session, petition.id, n, status)
        db.session.commit()
        db.session.remove()

    text = scrape(app)
    assert value(text, "campaign_outbox_emails", kind="signature_confirmation", status="queued") == 2
    assert value(text, "campaign_outbox_emails", kind="signature_confirmation", status="sending") == 1
    assert value(text, "campaign_outbox_emails", kind="signature_confirmation", status="failed") == 1
    assert value(text, "campaign_outbox_emails", status="sent") is None  # never counted whole
    assert 600 <= value(text, "campaign_outbox_oldest_queued_age_seconds") < 660
    assert 120 <= value(text, "campaign_outbox_oldest_due_age_seconds") < 180
    assert value(text, "campaign_outbox_sent_recent", kind="signature_confirmation") == 1
    assert value(text, "campaign_outbox_sent_recent", kind="signature_already_confirmed") == 1
    assert value(text, "campaign_signatures_held") == 2
    assert value(text, "campaign_metrics_source_up", source="database") == 1


def test_database_down_answers_fast_with_the_source_marked_down(smtp_port, black_hole):
    app = create_app(base_config(f"postgresql://nobody@127.0.0.1:{black_hole}/none", smtp_port,
                                 METRICS_DB_TIMEOUT=0.5, DATABASE_CONNECT_TIMEOUT=30))
    started = time.monotonic()
    text = scrape(app)
    assert time.monotonic() - started < 1.5
    assert value(text, "campaign_metrics_source_up", source="database") == 0
    assert value(text, "campaign_outbox_oldest_due_age_seconds") is None
    assert "campaign_http_requests_total" in text  # the process's own figures are still there


@pytest.mark.integration
def test_celery_queue_lengths_on_redis(make_app, private_redis):
    # A Redis of its own: nothing else publishes there while it counts.
    server = private_redis()
    client = redis.Redis.from_url(server.url, socket_timeout=3)
    app = make_app(CELERY_BROKER_URL=server.url)
    celery = app.extensions["celery"]
    for _ in range(3):
        celery.send_task("outbox.send", args=[0], queue="confirmations")
    celery.send_task("outbox.send", args=[0], queue="bulk", priority=6)  # another priority list
    text = scrape(app)
    client.close()
    assert value(text, "campaign_celery_queue_length", queue="confirmations") == 3
    assert value(text, "campaign_celery_queue_length", queue="bulk") == 1
    assert value(text, "campaign_celery_queue_length", queue="letters") == 0
    assert value(text, "campaign_celery_unacked") == 0
    assert value(text, "campaign_metrics_source_up", source="broker") == 1


# --- several gunicorn workers ---------------------------------------------------------------------

def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        return str(response.read().decode())


def test_gunicorn_workers_add_up_in_multiprocess_mode(tmp_path, smtp_port):
    """Two gunicorn workers (the real gunicorn.conf.py) count requests in PROMETHEUS_MULTIPROC_DIR;
    whichever answers a scrape reports the sum. Without the folder each would report its own
    share, and this fails (checked once by running it with the variable unset)."""
    database = tmp_path / "gunicorn.db"
    config = base_config(f"sqlite:///{database}", smtp_port)
    builder = create_app(config)
    with builder.app_context():
        db.create_all()
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    folder = tmp_path / "prometheus"
    folder.mkdir()
    port = free_port()
    env = env_for(config) | {"PROMETHEUS_MULTIPROC_DIR": str(folder), "WEB_CONCURRENCY": "2",
                             "GUNICORN_BIND": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:app"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(base + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "gunicorn.log").read_text(errors="replace")) from None
                time.sleep(0.2)
        # Hold one worker on a request that has not finished arriving (a sync worker serves one
        # connection at a time), so the other serves the next ones; then let the first finish.
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.5)
        for _ in range(20):
            _get(base + "/healthz")
        held.sendall(b"Connection: close\r\n\r\n")
        assert held.recv(1024).startswith(b"HTTP/1.1 200")
        held.close()
        pids = {path.name for path in folder.glob("counter_*.db")}
        assert len(pids) == 2, f"both workers should have served: {pids}"
        for _ in range(6):
            text = _get(base + "/metrics")
            assert value(text, "campaign_http_requests_total", endpoint="public.healthz",
                         method="GET", status="200") == 22
            assert value(text, "campaign_metrics_source_up", source="database") == 1
    finally:
        server.terminate()
        server.wait(15)
        log.close()
    assert os.listdir(folder)
