"""Letters to officials with workers SIGKILLed in the middle of the batch (issue 4; RELIABILITY.md A1
for the letters queue): every letter must arrive exactly once.

--letters confirmed signatures of the demo petition (21 G20 leaders) are routed by the real planner
(one letter_to_target outbox row each, key letter:<signature>:<target>) and published to the
letters queue of two Celery workers on a private Redis, with one beat (the outbox sweep). At
random points the whole worker (main process and pool) is SIGKILLed --kills times and restarted,
and one pool child is SIGKILLed --child-kills times. The SMTP sink runs in this process and counts
Message-IDs: a letter's Message-ID is derived from its outbox key, the same on every attempt, so a
second copy of one letter has the same one.

    .venv/bin/python bench/letters_kill.py --letters 2000 --kills 3 --child-kills 1

Reports delivered, missing, duplicates and the time to drain; writes
bench/results/faults-letters-kill-<time>.json with the commit. tests/mailings/test_integration.py
runs a short version (one kill) in make test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faults.harness import (
    Beat,
    CeleryWorker,
    RedisServer,
    Target,
    app_config,
    count_by_status,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    publish,
    start_workers,
    wait_for,
    workdir,
)
from campaign.mail.sink import start_sink

COUNTRIES = ["AR", "AU", "BR", "CA", "CN", "FR", "DE", "IN", "ID", "IT", "JP", "MX", "RU", "SA", "ZA",
             "KR", "TR", "GB", "US", "NL", "KE"]  # the last two: written for by the EU and the AU


class MessageIdSink:
    """campaign.mail.sink on loopback, in a thread of this process, counting Message-IDs."""

    def __init__(self) -> None:
        self.controller, handler = start_sink()
        self.port = int(self.controller.port)
        self.lock = threading.Lock()
        self.copies: Counter[str] = Counter()
        handler.messages = _Discard()  # only the counts are needed
        handler.on_message = self._arrived

    def _arrived(self, message: EmailMessage) -> None:
        with self.lock:
            self.copies[str(message["Message-ID"])] += 1

    def unique(self) -> int:
        with self.lock:
            return len(self.copies)

    def total(self) -> int:
        with self.lock:
            return sum(self.copies.values())

    def stop(self) -> None:
        self.controller.stop()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--letters", type=int, default=2000, help="confirmed signers, one letter each")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers on the letters queue")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of a whole worker")
    parser.add_argument("--child-kills", type=int, default=1, help="SIGKILLs of one pool child")
    parser.add_argument("--lease", type=int, default=20, help="OUTBOX_LEASE_SECONDS")
    parser.add_argument("--sweep-interval", type=float, default=2.0, help="OUTBOX_SWEEP_INTERVAL")
    parser.add_argument("--grace", type=float, default=5.0, help="OUTBOX_SWEEP_GRACE")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for the batch (s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the kill points")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def queue_letters(app: Any, count: int) -> list[int]:
    """`count` confirmed, unrouted signatures, routed by the planner the confirmation runs
    (route_unrouted -> plan_letters), nothing published. Returns the letters' outbox ids."""
    from sqlalchemy import insert, select

    from campaign.extensions import db
    from campaign.models import OutboundEmail, Signature, SignatureStatus
    from campaign.models.base import utcnow
    from campaign.services.deliveries import route_unrouted
    from campaign.services.demo import DEMO_PETITION_SLUG
    from campaign.services.letters import LETTER
    from campaign.services.petitions import petition_by_slug
    from campaign.services.privacy import cipher

    with app.app_context():
        try:
            petition = petition_by_slug(db.session, DEMO_PETITION_SLUG)
            assert petition is not None
            crypt = cipher()
            now = utcnow()
            rows = [{"petition_id": petition.id, "name_encrypted": crypt.encrypt(f"Signer {i:05d}"),
                     "email_encrypted": crypt.encrypt(f"signer{i}@example.org"),
                     "email_index": crypt.blind_index(f"signer{i}@example.org"),
                     "country": COUNTRIES[i % len(COUNTRIES)], "comment": "",
                     "status": SignatureStatus.CONFIRMED, "confirmed_at": now, "created_at": now,
                     "consent_name_to_targets": True} for i in range(count)]
            db.session.execute(insert(Signature), rows)
            db.session.commit()
            app.extensions["campaign.publish"] = lambda email_id, queue: None  # published below, timed
            while route_unrouted(db.session, limit=1000):
                db.session.commit()
            db.session.commit()
            return list(db.session.scalars(select(OutboundEmail.id).where(OutboundEmail.kind == LETTER)
                                           .order_by(OutboundEmail.id)))
        finally:
            db.session.remove()


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("letters_kill", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = MessageIdSink()
        stack.callback(sink.stop)
        config = app_config(database, redis.url(), sink.port, LETTERS_PER_TARGET_PER_HOUR=10**9,
                            OUTBOX_LEASE_SECONDS=args.lease, OUTBOX_SWEEP_INTERVAL=args.sweep_interval,
                            OUTBOX_SWEEP_GRACE=args.grace)
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        ids = queue_letters(app, args.letters)
        log(f"{len(ids)} letters queued by the planner")

        beat = Beat(env, work, wait=False)
        stack.callback(beat.stop)
        workers: list[CeleryWorker] = []
        stack.callback(lambda: [w.stop() for w in workers])
        workers += start_workers(env, work, [f"w{i}" for i in range(args.workers)], args.concurrency,
                                 queues="letters,maintenance")
        beat.wait_ready()

        plan = ["worker"] * args.kills + ["child"] * args.child_kills
        rng.shuffle(plan)
        points = sorted(rng.uniform(0.05, 0.8) * len(ids) for _ in plan)
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        publish(app, ids, queue_name="letters")
        log(f"published {len(ids)} tasks in {time.monotonic() - started:.1f} s")
        deadline = started + args.timeout
        drained_at = None
        restarts = 0
        while time.monotonic() < deadline:
            progress = sink.unique()
            if points and progress >= points[0]:
                points.pop(0)
                kind = plan.pop(0)
                index = rng.randrange(len(workers))
                victim = workers[index]
                event: dict[str, Any] = {"kind": kind, "at_s": round(time.monotonic() - started, 2),
                                         "delivered_before": progress}
                if kind == "worker":
                    victim.signal_group(signal.SIGKILL)
                    victim.wait(10)
                    victim.stop()
                    restarts += 1
                    log(f"SIGKILL worker {victim.name} at {progress} delivered; restarting it")
                    workers[index] = CeleryWorker(f"w{index}-r{restarts}", env, work, args.concurrency,
                                                  queues="letters,maintenance")
                else:
                    children = victim.children()
                    if children:
                        child = rng.choice(children)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child, signal.SIGKILL)
                        log(f"SIGKILL pool child {child} of {victim.name} at {progress} delivered")
                    event["children"] = len(children)
                kills.append(event)
                continue
            if not points and count_by_status(app, "sent") == len(ids):
                drained_at = time.monotonic()
                break
            time.sleep(0.25)
        with contextlib.suppress(AssertionError, RuntimeError):
            wait_for(lambda: sink.unique() >= len(ids), 10)
        time.sleep(2)  # a copy on its way is counted too
        with sink.lock:
            copies = Counter(sink.copies)
        drain = (drained_at - started) if drained_at else None
        return {
            "letters": len(ids),
            "delivered": len(copies),
            "missing": len(ids) - len(copies),
            "duplicates": sum(n - 1 for n in copies.values() if n > 1),
            "max_copies": max(copies.values(), default=0),
            "time_to_drain_s": round(drain, 1) if drain else None,
            "letters_per_s": round(len(ids) / drain, 1) if drain else None,
            "kills": kills,
            "outbox_sent": count_by_status(app, "sent"),
        }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target("delivered", figures["delivered"] == figures["letters"],
               f"{figures['delivered']} of {figures['letters']}"),
        Target("missing", figures["missing"] == 0, str(figures["missing"])),
        Target("drained", figures["time_to_drain_s"] is not None, f"{figures['time_to_drain_s']} s"),
        # A kill right after the server accepted a letter and before the worker recorded it is
        # the one window SMTP leaves; each kill can cost at most one copy per pool process.
        Target("duplicates", figures["duplicates"] <= len(figures["kills"]) * args.concurrency,
               f"{figures['duplicates']} (bound: {len(figures['kills'])} kills x {args.concurrency})"),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("letters-kill", parse_args, run, check))
