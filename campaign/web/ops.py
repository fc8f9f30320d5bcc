"""Endpoints for the machines that watch the platform: /readyz for load balancers and
orchestrators, /metrics for Prometheus. (/healthz, "the process is up", is in public.py.)

Both answer within a bounded time whatever the database or broker do: every check runs with a
timeout, and a check that does not answer is reported, not waited for.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Flask, Response, abort, current_app, g, jsonify, request, request_started
from sqlalchemy.orm import Session

from campaign.extensions import db
from campaign.metrics import check_multiprocess_setup, gauge, observe_request, render
from campaign.observability import REQUEST_ID_HEADER, bind_request_id, release_request_id
from campaign.queue import QUEUE_NAMES
from campaign.services import health

bp = Blueprint("ops", __name__)


def init_app(app: Flask) -> None:
    """Request ids (for the logs) and request metrics for every request, and this blueprint's
    endpoints."""
    check_multiprocess_setup(app)

    # A signal, not a before_request function: those of extensions bound earlier (CSRF) run first
    # and may end the request, which would then go uncounted and without its id in the logs.
    def _start(_sender: Flask, **_extra: Any) -> None:
        g.campaign_request_started = time.perf_counter()
        g.campaign_request_id_token = bind_request_id(request.headers.get(REQUEST_ID_HEADER))[1]

    request_started.connect(_start, app, weak=False)

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("campaign_request_started")
        if started is not None:
            rule = request.url_rule
            observe_request(rule.endpoint if rule is not None else "unmatched", request.method,
                            response.status_code, time.perf_counter() - started)
        # The id is not sent back: answers to the sign form must stay byte-identical whatever
        # happened (no enumeration), and the proxy that set X-Request-ID logs it itself.
        return response

    @app.teardown_request
    def _end(_error: BaseException | None) -> None:
        token = g.pop("campaign_request_id_token", None)
        if token is not None:
            release_request_id(token)

    app.register_blueprint(bp)


# --- the app's connections to what it checks ---------------------------------------------------

def _redis_client(url: str, timeout: float) -> Any:
    """One client per URL and app: its pool is reused across probes instead of a TCP connect each."""
    clients: dict[str, Any] = current_app.extensions.setdefault("campaign.ops.redis", {})
    client = clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                      retry_on_timeout=False)
        clients[url] = client
    return client


def _is_redis(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("redis://", "rediss://", "unix://"))


def _broker_folder(app: Flask) -> str | None:
    celery = app.extensions.get("celery")
    if celery is None:
        return None
    folder = (celery.conf.broker_transport_options or {}).get("data_folder_in")
    return str(folder) if folder else None


def _code_migrations(app: Flask) -> health.Migrations | None:
    cached = app.extensions.get("campaign.ops.migrations")
    if cached is None:
        migrate = app.extensions.get("migrate")
        directory = getattr(migrate, "directory", None)
        if not directory or not Path(directory).is_dir():
            return None
        cached = health.code_migrations(str(directory))
        app.extensions["campaign.ops.migrations"] = cached
    return cached


def _scope(app: Flask) -> str:
    """This app's name for its running checks (tests build many apps in one process)."""
    scope: str = app.extensions.setdefault("campaign.ops.scope", uuid.uuid4().hex)
    return scope


def _in_session(engine: Any, work: Any) -> Any:
    """Run work(session) on a session of its own (the checks run outside the request's thread)."""
    with Session(engine) as session, session.begin():
        return work(session)


# --- /readyz ------------------------------------------------------------------------------------

def readiness(app: Flask) -> tuple[bool, dict[str, str]]:
    """Each check's state in a few words (never a URL, host or error text: /readyz is public)."""
    config = app.config
    timeout = float(config["READYZ_TIMEOUT"])
    engine = db.engine
    code = _code_migrations(app)
    checks: dict[str, Any] = {
        "database": lambda: _in_session(engine, lambda s: health.check_database(s, code, timeout)),
    }
    broker = str(config["CELERY_BROKER_URL"])
    if _is_redis(broker):
        client = _redis_client(broker, timeout)
        checks["broker"] = lambda: health.check_redis(client)
    elif broker.startswith("filesystem"):
        folder = _broker_folder(app)
        checks["broker"] = lambda: health.check_folder(folder) if folder else "broker folder missing"
    redis_url = config.get("REDIS_URL")
    if _is_redis(redis_url) and redis_url != broker:
        other = _redis_client(str(redis_url), timeout)
        checks["redis"] = lambda: health.check_redis(other)

    results = health.run_bounded(checks, timeout, scope=_scope(app))
    states: dict[str, str] = {}
    for name, result in results.items():
        if isinstance(result, health.CheckTimeout):
            states[name] = "timeout"
        elif isinstance(result, BaseException):
            states[name] = "unreachable"
        else:
            states[name] = str(result)
    if "database" in states and states["database"] not in {"timeout", "unreachable"}:
        states["migrations"] = states["database"] if code is not None else "ok"
        states["database"] = "ok"
    ready = all(state in {"ok", "ahead"} for state in states.values())
    return ready, states


@bp.get("/readyz")
def readyz() -> Response:
    ready, states = readiness(current_app)
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": states}
    if not ready:
        body["failed"] = sorted(name for name, state in states.items() if state not in {"ok", "ahead"})
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


# --- /metrics -----------------------------------------------------------------------------------

def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _authorized() -> None:
    """A bearer token when METRICS_TOKEN is set; otherwise only loopback, and never in production
    (behind a proxy on the same machine every client would look like loopback)."""
    config = current_app.config
    token = config.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
            response = Response("a bearer token is required\n", 401, mimetype="text/plain")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            abort(response)
        return
    if config["CAMPAIGN_ENV"] == "production" or not _loopback(request.remote_addr):
        abort(404)


def scrape_gauges(app: Flask) -> list[Any]:
    """The gauges read at scrape time from the database and the broker, each source bounded by
    METRICS_DB_TIMEOUT; a source that fails is reported by campaign_metrics_source_up."""
    config = app.config
    timeout = float(config["METRICS_DB_TIMEOUT"])
    engine = db.engine

    def from_database(session: Session) -> tuple[health.OutboxSnapshot, int]:
        health.limit_statement_time(session, timeout)
        snapshot = health.outbox_snapshot(
            session, int(config["METRICS_RECENT_WINDOW"]), int(config["OUTBOX_LEASE_SECONDS"]),
            int(config["OUTBOX_MAX_ATTEMPTS"]))
        return snapshot, health.held_signatures(session)

    checks: dict[str, Any] = {"metrics.database": lambda: _in_session(engine, from_database)}
    broker = str(config["CELERY_BROKER_URL"])
    if _is_redis(broker):
        client = _redis_client(broker, timeout)
        checks["metrics.broker"] = lambda: (health.redis_queue_lengths(client, QUEUE_NAMES),
                                            health.redis_unacked(client))
    elif broker.startswith("filesystem") and (folder := _broker_folder(app)):
        checks["metrics.broker"] = lambda: (health.folder_queue_lengths(folder, QUEUE_NAMES), None)
    results = health.run_bounded(checks, timeout, scope=_scope(app))

    families: list[Any] = []
    up: list[tuple[list[str], float]] = []
    database = results.get("metrics.database")
    up.append((["database"], 0.0 if isinstance(database, BaseException) else 1.0))
    if database is not None and not isinstance(database, BaseException):
        snapshot, held = database
        families += [
            gauge("campaign_outbox_emails", "Outbox rows waiting (queued, sending) or given up on "
                  "(failed), by kind and status", ["kind", "status"],
                  [([kind, status], n) for kind, status, n in snapshot.by_kind_status]),
            gauge("campaign_outbox_oldest_queued_age_seconds",
                  "Seconds since the oldest queued email was queued (0: none queued)",
                  value=snapshot.oldest_queued_age),
            gauge("campaign_outbox_oldest_due_age_seconds",
                  "Seconds the oldest due, unsent email has been due (0: none due); grows when no "
                  "worker or beat runs", value=snapshot.oldest_due_age),
            gauge("campaign_outbox_sent_recent", "Emails sent in the last METRICS_RECENT_WINDOW "
                  "seconds, by kind", ["kind"], [([kind], n) for kind, n in snapshot.sent_recent]),
            gauge("campaign_signatures_held", "Signatures held for review (not counted)", value=held),
        ]
    broker_result = results.get("metrics.broker")
    if "metrics.broker" in results:
        up.append((["broker"], 0.0 if isinstance(broker_result, BaseException) else 1.0))
    if broker_result is not None and not isinstance(broker_result, BaseException):
        lengths, unacked = broker_result
        families.append(gauge("campaign_celery_queue_length", "Tasks waiting in each Celery queue",
                              ["queue"], [([queue], n) for queue, n in lengths.items()]))
        if unacked is not None:
            families.append(gauge("campaign_celery_unacked", "Tasks taken by a worker and not yet "
                                  "acknowledged (Redis broker)", value=unacked))
    families.append(gauge("campaign_metrics_source_up", "1 if this scrape could read the source",
                          ["source"], up))
    return families


@bp.get("/metrics")
def metrics() -> Response:
    _authorized()
    body, content_type = render(current_app, scrape_gauges(current_app))
    response = Response(body, 200, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
