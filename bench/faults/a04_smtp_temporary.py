"""A4 — SMTP temporary failure (RELIABILITY.md test 4).

--emails confirmation emails are published while the SMTP sink answers every RCPT with
"421 4.7.0 try later"; after --outage seconds it accepts again. The outbox retries each message
with exponential backoff and jitter (OUTBOX_BACKOFF_BASE, doubling to OUTBOX_BACKOFF_MAX), driven
by next_attempt_at and the sweep. The defaults are production's (a 10 min outage, base 30 s);
--outage 60 --backoff-base 3 --backoff-max 360 --sweep-interval 1 --grace 1 is the same run ten
times faster.

Reports attempts per message (a histogram, as the sink saw them), the longest gap between two
attempts, the gaps per attempt number (jitter: not all equal), and the delivered count.
Target: 100% delivered after recovery, <= 8 attempts per message, jitter present.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import itertools

from bench.faults.harness import (
    Beat,
    RedisServer,
    Sink,
    Target,
    address,
    app_config,
    delivery_figures,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    outbox_rows,
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
    parser.add_argument("--emails", type=int, default=200, help="emails sent (default: 200)")
    parser.add_argument(
        "--outage", type=float, default=600.0, help="seconds the sink answers 421 (default: 600)"
    )
    parser.add_argument("--backoff-base", type=int, default=30, help="OUTBOX_BACKOFF_BASE (default: 30)")
    parser.add_argument("--backoff-max", type=int, default=3600, help="OUTBOX_BACKOFF_MAX (default: 3600)")
    parser.add_argument("--max-attempts", type=int, default=8, help="OUTBOX_MAX_ATTEMPTS (default: 8)")
    parser.add_argument(
        "--sweep-interval", type=float, default=15.0, help="OUTBOX_SWEEP_INTERVAL (default: 15)"
    )
    parser.add_argument("--grace", type=float, default=30.0, help="OUTBOX_SWEEP_GRACE (default: 30)")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery pool processes (default: 2)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="longest wait after the outage (default: 2 x the longest backoff + 120 s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a04", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            OUTBOX_BACKOFF_BASE=args.backoff_base,
            OUTBOX_BACKOFF_MAX=args.backoff_max,
            OUTBOX_MAX_ATTEMPTS=args.max_attempts,
            OUTBOX_SWEEP_INTERVAL=args.sweep_interval,
            OUTBOX_SWEEP_GRACE=args.grace,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        beat = Beat(env, work, wait=False)
        stack.callback(beat.stop)
        workers = start_workers(env, work, ["worker"], args.concurrency)
        stack.callback(stop_all, workers)
        beat.wait_ready()

        addresses = [address("a04", i) for i in range(args.emails)]
        ids = queue_confirmations(app, addresses)
        sink.refuse("*", "421 4.7.0 try later")
        started = time.monotonic()
        publish(app, list(ids.values()))
        log(f"sink answers 421 for {args.outage:.0f} s")
        time.sleep(max(0.0, started + args.outage - time.monotonic()))
        sink.clear()
        recovered = time.time()
        log("sink accepts again")
        longest = min(args.backoff_max, args.backoff_base * 2 ** (args.max_attempts - 1))
        timeout = args.timeout if args.timeout is not None else 2 * longest + 120

        def settled() -> bool:
            return all(r["status"] in ("sent", "failed") for r in outbox_rows(app))

        wait_for(settled, timeout, 1.0)
        time.sleep(2)
        figures: dict[str, Any] = delivery_figures(sink, addresses)
        figures.update(attempt_figures(sink, addresses, recovered))
        figures.update(scheduled_delays("".join(w.text() for w in workers)))
        figures["outbox"] = outbox_summary(app)
        figures["failed"] = figures["outbox"]["by_status"].get("failed", 0)
        figures["outage_s"] = args.outage
        figures["all_delivered_after_recovery_s"] = (
            round(max(t for t, a in sink.arrivals if a in set(addresses)) - recovered, 1)
            if figures["delivered"]
            else None
        )
    return figures


def attempt_figures(sink: Sink, addresses: list[str], recovered: float) -> dict[str, Any]:
    """What the sink saw: each message's attempts (refusals, then the acceptance) and the gaps."""
    wanted = set(addresses)
    with sink.lock:
        seen: dict[str, list[float]] = {a: [t for t, _code in sink.refused.get(a, [])] for a in wanted}
        for when, recipient in sink.arrivals:
            if recipient in wanted:
                seen[recipient].append(when)
    per_message = {a: sorted(times) for a, times in seen.items()}
    histogram = Counter(len(times) for times in per_message.values())
    gaps_by_attempt: dict[int, list[float]] = {}
    for times in per_message.values():
        for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
            gaps_by_attempt.setdefault(n, []).append(after - before)
    all_gaps = [g for gaps in gaps_by_attempt.values() for g in gaps]
    return {
        "attempts_per_message_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "max_attempts_seen": max(histogram, default=0),
        "max_backoff_gap_s": round(max(all_gaps), 1) if all_gaps else None,
        "gaps_after_attempt_s": {
            str(n): {
                "count": len(g),
                "min": round(min(g), 2),
                "mean": round(statistics.fmean(g), 2),
                "max": round(max(g), 2),
                "stdev": round(statistics.pstdev(g), 2),
            }
            for n, g in sorted(gaps_by_attempt.items())
        },
        "distinct_gaps_first_retry": len({round(g, 2) for g in gaps_by_attempt.get(1, [])}),
    }


_DEFERRED = re.compile(r"email (\d+): attempt (\d+) deferred, next in ([0-9.]+) s")


def scheduled_delays(log_text: str) -> dict[str, Any]:
    """The backoff each retry was given (the workers log it), by attempt number: jitter means the
    messages that failed together were not all given the same delay."""
    by_attempt: dict[int, list[float]] = {}
    for _email, attempt, delay in _DEFERRED.findall(log_text):
        by_attempt.setdefault(int(attempt), []).append(float(delay))
    return {
        "scheduled_delay_after_attempt_s": {
            str(n): {"count": len(d), "min": min(d), "max": max(d), "distinct": len(set(d))}
            for n, d in sorted(by_attempt.items())
        },
        "jitter_present": any(len(set(d)) > 1 for d in by_attempt.values())
        and all(len(set(d)) > 1 for d in by_attempt.values() if len(d) > 3),
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "100% delivered after recovery",
            figures["delivered"] == args.emails and figures["failed"] == 0,
            f"{figures['delivered']} of {args.emails}, {figures['failed']} failed",
        ),
        Target(
            "<= 8 attempts per message",
            0 < figures["max_attempts_seen"] <= 8,
            f"at most {figures['max_attempts_seen']}",
        ),
        Target(
            "jitter present",
            figures["jitter_present"],
            "distinct scheduled delays per attempt: "
            + ", ".join(
                f"{n}: {d['distinct']}/{d['count']}"
                for n, d in figures["scheduled_delay_after_attempt_s"].items()
            ),
        ),
        Target("no duplicates", figures["duplicates"] == 0, str(figures["duplicates"])),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a04", parse_args, run, check))
