"""Celery bound to the Flask app (the Flask docs' celery_init_app pattern) and the publisher.

The web process only publishes by task name; worker/ holds the task bodies. Publishing never
stalls or fails a request: a broker that is down is logged, remembered for a few seconds, and
left to the outbox sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Queue

from campaign.observability import task_context, task_headers

log = logging.getLogger(__name__)

QUEUE_NAMES = ("confirmations", "letters", "bulk", "maintenance")


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            # The request id of the request that published this task, in every line it logs.
            with app.app_context(), task_context(self.request, self.name):
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(_celery_config(app))
    celery.set_default()
    app.extensions["celery"] = celery
    app.extensions["campaign.publish"] = _Publisher(celery, app.logger).publish
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
            self.celery.send_task(
                "outbox.send", args=[email_id], queue=queue, retry=False, headers=task_headers()
            )
        except Exception as error:  # any broker failure: the row is committed, the sweep has it
            self.down_until = time.monotonic() + 5.0
            self.logger.warning(
                "broker unavailable, outbox sweep will send email %s: %s", email_id, type(error).__name__
            )
