"""B13 — signing load on one petition (RELIABILITY.md test 13), on the fault suite's stack.

gunicorn, a Celery worker and beat, PostgreSQL, a private Redis, the SMTP sink. Signatures are
offered at --rate per second for --seconds (open loop, each from its own loopback address, all on
one petition), then at --surge-rate for --surge-seconds. Backends waiting on a lock are sampled
all along (bench/common.py's LockSampler). Every accepted signature must be stored, and its
confirmation email must arrive.

Reports per phase throughput, p50/p95/p99 POST latency, error rate; lock waits; signatures lost;
emails missing. Target: error rate < 0.1%, p95 < --p95-ms (500) at the base rate, no lock waits on
the petition's counter, 0 lost. The RELIABILITY.md sizes are the defaults (33/s for 30 minutes,
then 333/s for 5 minutes); bench/surge.py measures the surge alone with CPU per role.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.a02_redis_down import signing_figures
from bench.faults.harness import (
    Target,
    WebStack,
    delivery_figures,
    latency_ms,
    log,
    main_wrapper,
    shared_or_own_stack,
    signing_load,
    wait_for,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=33.0, help="signatures/s (default: 33)")
    parser.add_argument("--seconds", type=float, default=1800.0, help="at --rate (default: 1800)")
    parser.add_argument("--surge-rate", type=float, default=333.0, help="then (default: 333)")
    parser.add_argument("--surge-seconds", type=float, default=300.0, help="0: no surge (default: 300)")
    parser.add_argument("--p95-ms", type=float, default=500.0, help="p95 target at --rate (default: 500)")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers (default: 4)")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="wait for the emails (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, web: WebStack | None = None) -> dict[str, Any]:
    from bench.common import LockSampler

    stamp = time.monotonic_ns() % 10**9
    figures: dict[str, Any] = {}
    with shared_or_own_stack(web, "b13", args.keep, web_workers=args.web_workers) as stack:
        accepted: list[str] = []
        phases = [("base", args.rate, args.seconds), ("surge", args.surge_rate, args.surge_seconds)]
        with LockSampler(stack.config["DATABASE_URL"], interval=0.1) as locks:
            for n, (name, rate, seconds) in enumerate(phases):
                if seconds <= 0:
                    continue
                load = signing_load(
                    stack.port, rate, seconds, f"b13-{stamp}-{name}", first=300_000 + n * 500_000
                )
                emails = [a.email for a in load.accepted()]
                accepted += emails
                phase = signing_figures(stack.app, load, emails)
                answered = [a for a in load.attempts if a.status]
                failed = len(load.attempts) - len([a for a in answered if a.status == 303])
                phase["error_rate"] = round(failed / max(1, len(load.attempts)), 5)
                phase["post_latency_ms"] = latency_ms([a.latency for a in answered])
                figures[name] = phase
                log(f"{name}: {phase}")
        figures["lock_waits"] = {
            "samples": locks.samples,
            "samples_with_waits": dict(locks.waiting),
            "max_backends_waiting": locks.max_waiting,
        }
        started = time.monotonic()
        wait_for(lambda: all(stack.sink.snapshot()[a] for a in accepted), args.drain_timeout, 1.0)
        figures["emails_drained_s"] = round(time.monotonic() - started, 1)
        time.sleep(1)
        figures["emails"] = delivery_figures(stack.sink, accepted)
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    targets = []
    for name in ("base", "surge"):
        if name not in figures:
            continue
        f = figures[name]
        targets += [
            Target(f"{name}: error rate < 0.1%", f["error_rate"] < 0.001, f"{f['error_rate']:.3%}"),
            Target(f"{name}: signatures lost", f["signatures_lost"] == 0, str(f["signatures_lost"])),
        ]
    base = figures["base"]["post_latency_ms"]
    targets.append(Target(f"base: p95 < {args.p95_ms:.0f} ms", base.get("p95", 1e9) < args.p95_ms, str(base)))
    counter_waits = {k: v for k, v in figures["lock_waits"]["samples_with_waits"].items() if "petition" in k}
    targets.append(Target("no lock waits on the petition's rows", not counter_waits, str(counter_waits)))
    e = figures["emails"]
    targets.append(
        Target(
            "emails lost / duplicated",
            e["missing"] == 0 and e["duplicates"] == 0,
            f"{e['missing']} / {e['duplicates']}",
        )
    )
    return targets


if __name__ == "__main__":
    sys.exit(main_wrapper("b13", parse_args, run, check))
