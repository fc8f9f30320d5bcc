"""Celery bound to the Flask app (the Flask docs' celery_init_app pattern) and the publisher.

The web process only publishes by task name; worker/ holds the task bodies. Publishing never
stalls or fails a request: a broker that is down is logged, remembered for a few seconds, and
left to the outbox sweep.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Queue
from kombu.transport import redis as kombu_redis
from redis import Redis

from campaign.observability import task_context, task_headers

log = logging.getLogger(__name__)

QUEUE_NAMES = ("confirmations", "letters", "bulk", "maintenance")
_FOLLOW_UP_KEY = "campaign:outbox:sweep-follow-up"


def _restore_unacked_only_while_connected() -> None:
    """A worker whose Redis connection drops while it holds unacknowledged tasks closes its
    channel, and kombu then restores those tasks through a new client built from a connection
    that is already released (``client`` is None): AttributeError, "Unrecoverable error", and
    the worker exits (bench/faults/a02_redis_down.py at 40/s). With no connection there is
    nothing to restore them through: Redis hands them out again after the visibility timeout,
    and the outbox sweep resends their rows sooner."""
    qos = kombu_redis.QoS
    if getattr(qos.restore_unacked, "_campaign_guarded", False):
        return
    original = qos.restore_unacked

    def restore_unacked(self: Any, client: Any = None) -> Any:
        if client is None and getattr(self.channel.connection, "client", None) is None:
            return None
        return original(self, client)

    restore_unacked._campaign_guarded = True  # type: ignore[attr-defined]
    restore_unacked._campaign_original = original  # type: ignore[attr-defined]
    qos.restore_unacked = restore_unacked  # type: ignore[method-assign]


def celery_init_app(app: Flask) -> Celery:
    _restore_unacked_only_while_connected()
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            # The request id of the request that published this task, in every line it logs.
            with app.app_context(), task_context(self.request, self.name):
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(_celery_config(app))
    celery.set_default()
    app.extensions["celery"] = celery
    broker = str(app.config["CELERY_BROKER_URL"])
    publisher = (_RedisPublisher(celery, app.logger, broker, float(app.config["BROKER_CONNECT_TIMEOUT"]))
                 if broker.startswith(("redis://", "rediss://")) else _Publisher(celery, app.logger))
    app.extensions["campaign.publish"] = publisher.publish
    app.extensions["campaign.broker"] = publisher
    return celery


def _celery_config(app: Flask) -> dict[str, Any]:
    config = app.config
    broker = config["CELERY_BROKER_URL"]
    timeout = float(config["BROKER_CONNECT_TIMEOUT"])
    transport: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    if broker.startswith("filesystem"):
        folder = Path(config["CELERY_BROKER_FOLDER"] or Path(app.instance_path) / "broker")
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            # kombu polls the folder once a second by default and takes one message per
            # poll: the relay sent 1 email a second (bench/faults/a12_sqlite_mode.py).
            "polling_interval": 0.05,
        }
        # This transport has no event loop, so a prefork worker uses billiard's plain pool: its
        # children share one job pipe behind a lock that an idle child holds while it waits. A
        # child SIGKILLed there never releases it, and the pool runs nothing again (A12). The
        # solo pool runs tasks in the relay itself; a SIGKILL of it is what the outbox sweep covers.
        pool["worker_pool"] = "solo"
    elif broker.startswith(("redis", "rediss")):
        # One short timeout for every Redis command: a hung Redis must not hold a signing request
        # (kombu polls BRPOP with a 1 s timeout, which stays below it).
        transport = {
            "socket_connect_timeout": timeout,
            "socket_timeout": max(timeout, 1.5),
            "visibility_timeout": int(config["CELERY_VISIBILITY_TIMEOUT"]),
            # A publisher's first connect to a refused broker gives up at once: kombu's
            # default retries after a 2 s sleep, which stalled a signing request 2 s
            # (bench/faults/a02_redis_down.py). Workers and beat retry on their own terms
            # (broker_connection_max_retries), which this does not change.
            "max_retries": 0,
        }
    return {
        "broker_url": broker,
        "broker_transport_options": transport,
        "broker_connection_timeout": timeout,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_default_queue": "bulk",
        # A worker started without -Q consumes every queue; -Q picks a subset per machine.
        "task_queues": [Queue(name) for name in QUEUE_NAMES],
        # A task is acknowledged after it ran; a killed worker's task comes back.
        # The outbox claim makes the second run harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A worker stopped at once lets running sends finish first (bench/faults/a10_graceful_deploy.py).
        "worker_soft_shutdown_timeout": float(config["CELERY_SOFT_SHUTDOWN_TIMEOUT"]),
        "task_publish_retry": False,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "outbox-sweep": {
                "task": "outbox.sweep",
                "schedule": float(config["OUTBOX_SWEEP_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["OUTBOX_SWEEP_INTERVAL"])},
            },
            # Issue 6: trending addresses and domains alert organizers; retention forgets.
            "abuse-trending": {
                "task": "abuse.trending",
                "schedule": float(config["TRENDING_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["TRENDING_INTERVAL"])},
            },
            "privacy-retention": {
                "task": "privacy.retention",
                "schedule": float(config["RETENTION_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["RETENTION_INTERVAL"])},
            },
            # Issue 4: batched deliveries to officials are rows with a send-after time that this
            # job finds, never broker countdowns (which Redis re-runs after its visibility timeout).
            "deliveries-run": {
                "task": "deliveries.run",
                "schedule": float(config["DELIVERIES_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["DELIVERIES_INTERVAL"])},
            },
            # Issue 3's closing dates: petitions past theirs are closed by this job.
            "petitions-close-due": {
                "task": "petitions.close_due",
                "schedule": float(config["PETITION_CLOSE_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["PETITION_CLOSE_INTERVAL"])},
            },
            # Issue 8: webhook retries are rows with a next-attempt time that this sweep finds.
            "webhooks-sweep": {
                "task": "webhooks.sweep",
                "schedule": float(config["WEBHOOK_SWEEP_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["WEBHOOK_SWEEP_INTERVAL"])},
            },
            # Issue 7: supporter updates due at their send time (rows, not countdowns), stalled
            # updates re-published, expired export files deleted.
            "reach-run": {
                "task": "reach.run",
                "schedule": float(config["REACH_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["REACH_INTERVAL"])},
            },
            # Issue 5: the one reminder to confirm, found from signature rows (no long ETAs).
            "reminders-run": {
                "task": "reminders.run",
                "schedule": float(config["REMINDER_INTERVAL"]),
                "options": {"queue": "maintenance", "expires": float(config["REMINDER_INTERVAL"])},
            },
        },
        "timezone": "UTC",
        **pool,
    }


class _Publisher:
    """Publish outbox.send by name; skip the broker for a moment after it failed."""

    def __init__(self, celery: Celery, logger: logging.Logger) -> None:
        self.celery = celery
        self.logger = logger
        self.down_until = 0.0

    def publish(self, email_id: int, queue: str) -> None:
        if time.monotonic() < self.down_until:
            return  # the sweep will send it
        try:
            self.send(email_id, queue)
        except Exception as error:  # any broker failure: the row is committed, the sweep has it
            self.down_until = time.monotonic() + 5.0
            self.logger.warning(
                "broker unavailable, outbox sweep will send email %s: %s", email_id, type(error).__name__
            )

    def send(self, email_id: int, queue: str) -> None:
        self.celery.send_task("outbox.send", args=[email_id], queue=queue, retry=False,
                              headers=task_headers())

    def depth(self, queue: str) -> int | None:
        """Tasks waiting in a queue, or None where the broker cannot say."""
        return None

    def hold_follow_up(self, queue: str, seconds: float, renew: bool) -> bool:
        """Whether this sweep may publish a follow-up sweep of the queue (one chain at a time)."""
        return False


class _RedisPublisher(_Publisher):
    """outbox.send pushed straight onto the Redis list the worker reads: Celery builds the task
    message (as_task_v2), this wraps it as kombu's Redis transport does for the anonymous
    exchange and sends one LPUSH. kombu's producer path cost about 0.4 ms of the web's CPU per
    signature (issue 9); tests/test_queue_publish.py holds the result equal to send_task's."""

    def __init__(self, celery: Celery, logger: logging.Logger, url: str, timeout: float) -> None:
        super().__init__(celery, logger)
        # kombu's transport timeouts (see _celery_config): a hung Redis must not hold a request.
        self.redis = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 1.5))

    def message(self, email_id: int, queue: str) -> str:
        task_id = str(uuid.uuid4())
        amqp = self.celery.amqp
        task = amqp.as_task_v2(task_id, "outbox.send", args=[email_id], kwargs={},
                               reply_to=self.celery.thread_oid, ignore_result=None)
        headers = {**task.headers, **task_headers()}
        body = base64.b64encode(json.dumps(task.body).encode("utf-8")).decode("ascii")
        properties = {
            **task.properties, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue}, "delivery_tag": str(uuid.uuid4()),
        }
        return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                           "headers": headers, "properties": properties})

    def send(self, email_id: int, queue: str) -> None:
        self.redis.lpush(queue, self.message(email_id, queue))

    def depth(self, queue: str) -> int | None:
        # The list kombu's Redis transport reads for unprioritised messages, which all of ours are.
        return int(self.redis.llen(queue))

    def hold_follow_up(self, queue: str, seconds: float, renew: bool) -> bool:
        # Beat's sweep starts a chain only when none is pending; a follow-up carries its own on.
        # The key expires, so beat restarts a chain whose follow-up was lost.
        return bool(self.redis.set(f"{_FOLLOW_UP_KEY}:{queue}", "1", px=max(1, int(seconds * 1000)),
                                   nx=not renew))
