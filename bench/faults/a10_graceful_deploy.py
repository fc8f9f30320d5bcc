"""A10 — graceful deploy (RELIABILITY.md test 10).

--emails confirmation emails are published to two Celery workers; --deploys times during the batch
every worker is sent SIGTERM at once, as a deploy does, and new workers are started once the old
ones have exited. The sink holds each message --smtp-delay seconds, so sends are in flight when
the signal comes.

--shutdown soft (the default) runs the workers with REMAP_SIGTERM=SIGQUIT, as platforms that stop
a process with SIGTERM then SIGKILL advise: SIGTERM starts Celery's cold shutdown, preceded by the
soft shutdown (CELERY_SOFT_SHUTDOWN_TIMEOUT, --soft-timeout): running sends get that long to
finish, then the rest are cancelled and their tasks go back to Redis. --shutdown warm keeps
Celery's default: SIGTERM waits for every running task.

No sweep runs during the batch, so a task that the shutdown lost shows up as a row left unsent:
that count is "lost tasks". Then beat starts and the sweep sends what was left (lease permitting):
"emails lost" is what is still missing after that.
Reports lost tasks, emails lost, duplicates, per deploy the shutdown time and the time from SIGTERM
until the new workers sent again. Target: 0 lost.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import time
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
    count_by_status,
    delivery_figures,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    outbox_summary,
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
    parser.add_argument("--emails", type=int, default=10_000, help="emails in the batch (default: 10000)")
    parser.add_argument("--deploys", type=int, default=2, help="SIGTERMs of every worker (default: 2)")
    parser.add_argument(
        "--shutdown",
        choices=("soft", "warm"),
        default="soft",
        help="soft: REMAP_SIGTERM=SIGQUIT with a soft shutdown; warm: Celery's default",
    )
    parser.add_argument(
        "--soft-timeout",
        type=float,
        default=10.0,
        help="CELERY_SOFT_SHUTDOWN_TIMEOUT for --shutdown soft (default: 10)",
    )
    parser.add_argument(
        "--smtp-delay", type=float, default=0.05, help="seconds the sink holds each DATA (default: 0.05)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default: 2)")
    parser.add_argument(
        "--lease",
        type=int,
        default=30,
        help="OUTBOX_LEASE_SECONDS, for the sweep after the batch (default: 30)",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=15.0,
        help="seconds without progress that end the batch phase (default: 15)",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="longest wait for each phase (s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the deploy points")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a10", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        sink.delay(args.smtp_delay)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            OUTBOX_LEASE_SECONDS=args.lease,
            OUTBOX_SWEEP_INTERVAL=2,
            OUTBOX_SWEEP_GRACE=5,
            CELERY_SOFT_SHUTDOWN_TIMEOUT=args.soft_timeout if args.shutdown == "soft" else 0,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        extra = {"REMAP_SIGTERM": "SIGQUIT"} if args.shutdown == "soft" else {}
        env = env_for(config, **extra)
        addresses = [address("a10", i) for i in range(args.emails)]
        ids = queue_confirmations(app, addresses)
        generation = 0
        workers: list[CeleryWorker] = []
        stack.callback(stop_all, workers)
        workers += start_workers(env, work, [f"g0-w{i}" for i in range(2)], args.concurrency)
        points = sorted(rng.uniform(0.1, 0.7) * args.emails for _ in range(args.deploys))
        started = time.monotonic()
        publish(app, list(ids.values()))
        deploys: list[dict[str, Any]] = []
        last_progress, last_change = -1, time.monotonic()
        while time.monotonic() - started < args.timeout:
            progress = sink.unique()
            if progress != last_progress:
                last_progress, last_change = progress, time.monotonic()
            if points and progress >= points[0]:
                points.pop(0)
                generation += 1
                deploys.append(deploy(workers, env, work, args, generation, sink, app))
                last_change = time.monotonic()
                continue
            if not points and (progress >= args.emails or time.monotonic() - last_change > args.stall):
                break
            time.sleep(0.2)
        batch_s = time.monotonic() - started
        unsent = args.emails - count_by_status(app, "sent")
        by_status = outbox_summary(app)["by_status"]
        log(f"batch phase over after {batch_s:.0f} s: {unsent} rows unsent {by_status}; starting the sweep")
        beat = Beat(env_for(config), work)
        stack.callback(beat.stop)
        wait_for(lambda: count_by_status(app, "sent") == args.emails, args.timeout, 1.0)
        time.sleep(2)
        figures: dict[str, Any] = {
            "shutdown": args.shutdown,
            "soft_timeout_s": args.soft_timeout if args.shutdown == "soft" else None,
        }
        figures["lost_tasks"] = unsent
        figures["outbox_after_batch"] = by_status
        figures.update(delivery_figures(sink, addresses))
        figures["emails_lost"] = figures.pop("missing")
        figures["deploys"] = deploys
        figures["batch_phase_s"] = round(batch_s, 1)
        figures["outbox"] = outbox_summary(app)
    return figures


def deploy(
    workers: list[CeleryWorker],
    env: dict[str, str],
    work: Path,
    args: argparse.Namespace,
    generation: int,
    sink: Sink,
    app: Any,
) -> dict[str, Any]:
    """SIGTERM to every worker, wait for them to exit, start their successors."""
    in_flight = count_by_status(app, "sending")
    signalled = time.monotonic()
    wall = time.time()
    for worker in workers:
        worker.signal(signal.SIGTERM)
    exits = [worker.wait(90) for worker in workers]
    down = time.monotonic() - signalled
    for worker in workers:
        worker.stop()
    log(
        f"deploy {generation}: SIGTERM with {in_flight} sends in flight; old workers out after {down:.1f} s "
        f"(exit codes {exits})"
    )
    workers[:] = start_workers(env, work, [f"g{generation}-w{i}" for i in range(2)], args.concurrency)
    ready = time.time()
    wait_for(lambda: any(t > ready for t, _a in list(sink.arrivals)[-50:]), 60, 0.05)
    with sink.lock:
        resumed = min((t for t, _a in sink.arrivals if t > ready), default=None)
    return {
        "sends_in_flight_at_sigterm": in_flight,
        "old_workers_exited_s": round(down, 1),
        "exit_codes": exits,
        "resumed_after_sigterm_s": round(resumed - wall, 1) if resumed else None,
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "lost tasks",
            figures["lost_tasks"] == 0,
            f"{figures['lost_tasks']} rows left unsent without the sweep ({figures['outbox_after_batch']})",
        ),
        Target("emails lost", figures["emails_lost"] == 0, str(figures["emails_lost"])),
        Target("duplicates", figures["duplicates"] == 0, str(figures["duplicates"])),
        Target(
            "workers resumed",
            all(d["resumed_after_sigterm_s"] is not None for d in figures["deploys"])
            and len(figures["deploys"]) == args.deploys,
            ", ".join(f"{d['resumed_after_sigterm_s']} s" for d in figures["deploys"]),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a10", parse_args, run, check))
