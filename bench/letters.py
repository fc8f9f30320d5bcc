"""Letters to officials per second, delivered through the SMTP sink, beside the limit: a bare
smtplib loop sending the very same messages to the very same sink.

What runs: a fresh PostgreSQL database with the demo (21 G20 leaders), N confirmed signatures
routed by the real planner (route_unrouted -> plan_letters: one letter_to_target outbox row per
signature, on the letters queue), then Celery worker processes on Redis that send them. The clock
starts when the first task is published and stops when the sink has the last letter. The bare
loop then sends the same bytes (rendered by the same builders) with smtplib, one connection per
message as the worker's sender does, sequentially and with as many threads as worker processes.

    .venv/bin/python bench/letters.py --signatures 10000 --concurrency 4

Prints the figures and writes bench/results/letters-<time>.json with the commit.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Sink,
    app_environment,
    fresh_database,
    log,
    redis_url,
    start_celery,
    versions,
    workdir,
    write_results,
)

COUNTRIES = ["AR", "AU", "BR", "CA", "CN", "FR", "DE", "IN", "ID", "IT", "JP", "MX", "RU", "SA", "ZA",
             "KR", "TR", "GB", "US", "NL", "KE"]  # the last two: written for by the EU and the AU


FAST_HASHING = {"PASSWORD_HASH_MEMORY_KIB": "19456", "PASSWORD_HASH_TIME_COST": "2",
                "PASSWORD_HASH_PARALLELISM": "1"}


def build_app(env: dict[str, str]) -> Any:
    from campaign import create_app

    keys = ("SECRET_KEY", "SIGNER_DATA_KEYS", "BLIND_INDEX_KEY", "BASE_URL", "DATABASE_URL", "REDIS_URL",
            "MAIL_SERVER", "MAIL_PORT", "MAIL_DEFAULT_SENDER", "LETTERS_PER_TARGET_PER_HOUR", "CAMPAIGN_ENV",
            "PASSWORD_HASH_MEMORY_KIB", "PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_PARALLELISM")
    return create_app({key: env[key] for key in keys if key in env})


def prepare(app: Any, count: int) -> tuple[list[int], float]:
    """Seed the demo and `count` confirmed, unrouted signatures; route them with the planner.
    Returns the letter outbox ids and the planner's milliseconds per signature."""
    from sqlalchemy import insert, select

    from campaign.extensions import db
    from campaign.models import OutboundEmail, Signature, SignatureStatus
    from campaign.models.base import utcnow
    from campaign.services.deliveries import route_unrouted
    from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo
    from campaign.services.petitions import petition_by_slug
    from campaign.services.privacy import cipher

    with app.app_context():
        db.create_all()
        seed_demo(db.session)
        db.session.commit()
        petition = petition_by_slug(db.session, DEMO_PETITION_SLUG)
        assert petition is not None
        crypt = cipher()
        now = utcnow()
        rows = []
        for i in range(count):
            address = f"signer{i}@example.org"
            rows.append({"petition_id": petition.id, "name_encrypted": crypt.encrypt(f"Signer {i:05d}"),
                         "email_encrypted": crypt.encrypt(address), "email_index": crypt.blind_index(address),
                         "country": COUNTRIES[i % len(COUNTRIES)], "comment": "I stand with them.",
                         "status": SignatureStatus.CONFIRMED, "confirmed_at": now, "created_at": now,
                         "consent_name_to_targets": i % 3 == 0, "consent_reply_to": i % 5 == 0})
        for start in range(0, count, 2000):
            db.session.execute(insert(Signature), rows[start:start + 2000])
        db.session.commit()
        # The planner the confirmation runs, timed; its publishes are held back until the clock starts.
        app.extensions["campaign.publish"] = lambda email_id, queue: None
        began = time.perf_counter()
        routed = 0
        while True:
            done = route_unrouted(db.session, limit=1000)
            db.session.commit()
            routed += done
            if done == 0:
                break
        planner_ms = (time.perf_counter() - began) * 1000 / max(routed, 1)
        letters = select(OutboundEmail.id).where(OutboundEmail.kind == "letter_to_target")
        ids = list(db.session.scalars(letters.order_by(OutboundEmail.id)))
        db.session.remove()
    return ids, planner_ms


def rendered_messages(app: Any) -> list[tuple[str, list[str], bytes]]:
    """The letters exactly as the worker built them: sender, recipients, bytes."""
    from email.utils import parseaddr

    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.mail.messages import build_message
    from campaign.models import OutboundEmail
    from campaign.services.outbox import _builders

    out = []
    with app.app_context():
        sender = parseaddr(app.config["MAIL_DEFAULT_SENDER"])[1]
        for row in db.session.scalars(select(OutboundEmail).where(OutboundEmail.kind == "letter_to_target")
                                      .order_by(OutboundEmail.id)):
            draft = _builders[row.kind](db.session, row)
            assert draft is not None
            message = build_message(draft, app.config["MAIL_DEFAULT_SENDER"])
            out.append((sender, [draft.to_address], message.as_bytes()))
        db.session.remove()
    return out


def bare_loop(port: int, messages: list[tuple[str, list[str], bytes]], threads: int) -> float:
    """Seconds a bare smtplib loop takes to send the messages, one connection per message as
    the worker's sender does, split over `threads` threads."""
    chunks = [messages[i::threads] for i in range(threads)]

    def send(chunk: list[tuple[str, list[str], bytes]]) -> None:
        for sender, recipients, data in chunk:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail(sender, recipients, data)

    began = time.perf_counter()
    workers = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began


def wait_count(sink: Sink, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sink.lock:
            if sink.count >= target:
                return time.time()
        time.sleep(0.05)
    raise RuntimeError(f"the sink has {sink.count} of {target} messages after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signatures", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (one Celery worker)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(redis_url(), socket_timeout=5).flushdb()
    sink = Sink()
    try:
        with fresh_database("letters", keep=args.keep) as url, workdir(keep=args.keep) as folder:
            # Argon2 at R35's floor: the demo seed hashes an organizer's password.
            env = app_environment(url, 0, sink.port, LETTERS_PER_TARGET_PER_HOUR=str(10 ** 9),
                                  **FAST_HASHING)
            app = build_app(env)
            log(f"seeding {args.signatures:,} confirmed signatures and routing them")
            ids, planner_ms = prepare(app, args.signatures)
            log(f"{len(ids):,} letters queued; the planner took {planner_ms:.2f} ms per signature")
            worker = start_celery(env, args.concurrency, folder, queues="letters", name="letters")
            try:
                with app.app_context():
                    celery = app.extensions["celery"]
                    started = time.time()
                    for email_id in ids:
                        celery.send_task("outbox.send", args=[email_id], queue="letters")
                    published = time.time()
                last = wait_count(sink, len(ids), args.timeout)
                cpu = worker.cpu_seconds()
            finally:
                worker.stop()
            system_seconds = last - started
            with sink.lock:
                arrived = sink.count
            log("rendering the same messages for the bare loop")
            messages = rendered_messages(app)
            with sink.lock:
                sink.count = 0
            sequential = bare_loop(sink.port, messages, 1)
            wait_count(sink, len(messages), 120)
            with sink.lock:
                sink.count = 0
            parallel = bare_loop(sink.port, messages, args.concurrency)
            wait_count(sink, len(messages), 120)

        rate = len(ids) / system_seconds
        bare_1 = len(messages) / sequential
        bare_n = len(messages) / parallel
        size = sum(len(m[2]) for m in messages) / max(len(messages), 1)
        figures = {
            "signatures": args.signatures,
            "letters": len(ids),
            "letters_arrived": arrived,
            "letters_per_second": round(rate, 1),
            "seconds": round(system_seconds, 2),
            "publish_seconds": round(published - started, 2),
            "planner_ms_per_signature": round(planner_ms, 2),
            "worker_cpu_seconds": round(cpu, 1),
            "worker_cpu_ms_per_letter": round(cpu * 1000 / len(ids), 2),
            "bare_smtplib_sequential_per_second": round(bare_1, 1),
            f"bare_smtplib_{args.concurrency}_threads_per_second": round(bare_n, 1),
            "ratio_to_bare_sequential": round(rate / bare_1, 3),
            f"ratio_to_bare_{args.concurrency}_threads": round(rate / bare_n, 3),
            "mean_message_bytes": round(size),
        }
        conditions = {
            "worker": f"one Celery worker, prefork, --concurrency {args.concurrency}, queue letters, "
                      "acks_late, prefetch 1",
            "database": "PostgreSQL on 127.0.0.1 (fresh database)",
            "broker": f"Redis {redis_url()}",
            "sink": "aiosmtpd (campaign.mail.sink) in a process of its own on 127.0.0.1",
            "smtp": "one connection per message (Flask-Mail's, and the bare loop's)",
            "bare_loop": "smtplib.sendmail of the worker's own message bytes, 1 thread and "
                         f"{args.concurrency} threads",
            "cpus": os.cpu_count(),
            "load_average_before_end": [round(x, 2) for x in os.getloadavg()],
        }
        print()
        print(f"letters through the sink: {rate:,.1f}/s ({len(ids):,} in {system_seconds:.1f} s, "
              f"worker CPU {figures['worker_cpu_ms_per_letter']} ms per letter)")
        print(f"bare smtplib, same messages: {bare_1:,.1f}/s sequential, {bare_n:,.1f}/s "
              f"with {args.concurrency} threads")
        print(f"ratio: {rate / bare_1:.2f} of the sequential loop, {rate / bare_n:.2f} of the "
              f"{args.concurrency}-thread loop")
        print(f"planner (route + outbox row) per confirmed signature: {planner_ms:.2f} ms")
        path = write_results("letters", {"figures": figures, "conditions": conditions,
                                         "versions": versions()})
        print(f"results: {path.relative_to(Path(__file__).resolve().parent.parent)}")
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
