"""A6 — a send due beyond the broker's visibility timeout (RELIABILITY.md test 6; Celery #2481, #7009).

The Redis broker hands a task that a worker took but has not acknowledged to another worker once
CELERY_VISIBILITY_TIMEOUT has passed; a task held for a countdown (ETA) longer than that is run
twice. The project never schedules mail with broker ETAs: an email due later is an outbox row
whose next_attempt_at lies ahead, which the sweep publishes once it is due.

Part 1, the project's way: a row due --delay seconds from now, nothing published, two workers and
beat; the sweep sends it when due. Part 2, the hazard: the same kind of row published once with
countdown=--delay to one worker (no beat, no sweep); --second-at seconds later (past the
visibility timeout) a second worker starts, and its start-up scan of Redis's unacknowledged tasks
hands it the waiting task too. Both run it when due; the claim lets one of them send.

Reports executions and emails for each part. Target: exactly 1 email in each.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    Beat,
    CeleryWorker,
    RedisServer,
    Sink,
    Target,
    address,
    app_config,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    publish,
    queue_confirmations,
    start_workers,
    stop_all,
    wait_for,
    workdir,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visibility", type=int, default=10, help="CELERY_VISIBILITY_TIMEOUT (default: 10)")
    parser.add_argument(
        "--delay", type=float, default=30.0, help="seconds until the send is due (default: 30)"
    )
    parser.add_argument(
        "--second-at",
        type=float,
        default=None,
        help="part 2: second worker starts this many seconds after the publish (default: visibility + 2)",
    )
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds watched after the send was due (default: 15)"
    )
    parser.add_argument(
        "--parts",
        default="outbox,countdown",
        help="outbox (next_attempt_at), countdown (broker ETA), or both",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a06", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            CELERY_VISIBILITY_TIMEOUT=args.visibility,
            OUTBOX_SWEEP_INTERVAL=1,
            OUTBOX_SWEEP_GRACE=0,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        figures: dict[str, Any] = {"visibility_timeout_s": args.visibility, "due_in_s": args.delay}
        if "outbox" in args.parts:
            figures["outbox_next_attempt_at"] = outbox_part(args, stack, work, env, app, sink)
        if "countdown" in args.parts:
            figures["broker_countdown"] = countdown_part(args, stack, work, env, app, sink)
    return figures


def outbox_part(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    work: Path,
    env: dict[str, str],
    app: Any,
    sink: Sink,
) -> dict[str, Any]:
    """Part 1: next_attempt_at ahead, nothing published; the sweep publishes the row when due."""
    beat = Beat(env, work, wait=False)
    stack.callback(beat.stop)
    workers = start_workers(env, work, ["p1-w1", "p1-w2"], concurrency=1)
    stack.callback(stop_all, workers)
    beat.wait_ready()
    one = address("a06outbox", 1)
    queue_confirmations(app, [one], delay=args.delay)
    due = time.time() + args.delay
    log(f"part 1: a row due in {args.delay:.0f} s, nothing published")
    time.sleep(args.delay + args.settle)
    beat.stop()
    with sink.lock:
        arrived = [t for t, a in sink.arrivals if a == one]
    part1 = {
        "emails": sink.snapshot()[one],
        "executions": dict(Counter(o for w in workers for o in w.outcomes())),
        "sent_after_due_s": round(arrived[0] - due, 1) if arrived else None,
    }
    stop_all(workers)
    return part1


def countdown_part(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    work: Path,
    env: dict[str, str],
    app: Any,
    sink: Sink,
) -> dict[str, Any]:
    """Part 2: a broker countdown longer than the visibility timeout, two workers, no sweep."""
    second_at = args.second_at if args.second_at is not None else args.visibility + 2
    workers: list[CeleryWorker] = []
    stack.callback(stop_all, workers)
    two = address("a06eta", 2)
    ids = queue_confirmations(app, [two])
    workers.append(CeleryWorker("p2-w1", env, work, concurrency=1))
    publish(app, [ids[two]], countdown=args.delay)
    published = time.monotonic()
    log(f"part 2: published with countdown={args.delay:.0f} s, visibility timeout {args.visibility} s")
    time.sleep(max(0.0, published + second_at - time.monotonic()))
    # Its start-up scan of the unacknowledged tasks finds the waiting one past the visibility timeout.
    workers.append(CeleryWorker("p2-w2", env, work, concurrency=1))
    second_ready = time.monotonic() - published
    log(f"part 2: second worker up at {second_ready:.1f} s")
    time.sleep(max(0.0, published + args.delay + args.settle - time.monotonic()))
    wait_for(lambda: sink.snapshot()[two] > 0, 10)
    received = {
        w.name: sum(
            1 for line in w.text().splitlines() if "Task outbox.send[" in line and line.endswith(" received")
        )
        for w in workers
    }
    return {
        "emails": sink.snapshot()[two],
        "executions": dict(Counter(o for w in workers for o in w.outcomes())),
        "task_received_by": received,
        "broker_redelivered": sum(received.values()) > 1,
        "second_worker_ready_s": round(second_ready, 1),
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    targets = []
    if "outbox_next_attempt_at" in figures:
        part1 = figures["outbox_next_attempt_at"]
        targets += [
            Target(
                "next_attempt_at: exactly 1 email",
                part1["emails"] == 1,
                f"{part1['emails']} email(s), {part1['sent_after_due_s']} s after due",
            ),
            Target(
                "next_attempt_at: not before it was due",
                part1["sent_after_due_s"] is not None and part1["sent_after_due_s"] >= -0.5,
                f"{part1['sent_after_due_s']} s after due",
            ),
        ]
    if "broker_countdown" in figures:
        part2 = figures["broker_countdown"]
        targets.append(
            Target(
                "broker countdown beyond the visibility timeout: exactly 1 email",
                part2["emails"] == 1,
                f"{part2['emails']} email(s) from executions {part2['executions']}, "
                f"redelivered by the broker: {part2['broker_redelivered']}",
            )
        )
    return targets


if __name__ == "__main__":
    sys.exit(main_wrapper("a06", parse_args, run, check))
