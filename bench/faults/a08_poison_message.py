"""A8 — poison message (RELIABILITY.md test 8).

A send that kills its worker every time: the worker runs with CRASH_POINT=before_smtp, so each
attempt exits the pool process just before SMTP (task_reject_on_worker_lost is on: Celery puts the
task back). The claim's lease (--lease) runs out, the sweep hands the row on, and after
OUTBOX_MAX_ATTEMPTS claims fail_abandoned marks it failed: the dead letter. CRASH_POINT is refused
in production, so these workers run in testing mode.

Reports attempts before the dead letter, crashes, the dead-letter count (rows failed) and what
/metrics says about it (campaign_outbox_emails{status="failed"}).
Target: attempts = the configured maximum, not unbounded; the dead letters visible in metrics.
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
    outbox_rows,
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
    parser.add_argument("--rows", type=int, default=3, help="poison rows (default: 3)")
    parser.add_argument("--max-attempts", type=int, default=5, help="OUTBOX_MAX_ATTEMPTS (default: 5)")
    parser.add_argument("--lease", type=int, default=3, help="OUTBOX_LEASE_SECONDS (default: 3)")
    parser.add_argument(
        "--watch",
        type=float,
        default=10.0,
        help="seconds watched after the dead letter for a further attempt (default: 10)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for the dead letters (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a08", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            mode="testing",
            OUTBOX_MAX_ATTEMPTS=args.max_attempts,
            OUTBOX_LEASE_SECONDS=args.lease,
            OUTBOX_SWEEP_INTERVAL=1,
            OUTBOX_SWEEP_GRACE=0,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        beat = Beat(env_for(config), work, wait=False)
        stack.callback(beat.stop)
        workers = start_workers(env_for(config, CRASH_POINT="before_smtp"), work, ["poisoned"], 2)
        stack.callback(stop_all, workers)
        beat.wait_ready()
        addresses = [address("a08", i) for i in range(args.rows)]
        ids = queue_confirmations(app, addresses)
        started = time.monotonic()
        publish(app, list(ids.values()))
        done = wait_for(lambda: all(r["status"] == "failed" for r in outbox_rows(app)), args.timeout, 0.5)
        elapsed = time.monotonic() - started
        log(f"dead letters after {elapsed:.1f} s; watching {args.watch:.0f} s for another attempt")
        time.sleep(args.watch)
        rows = outbox_rows(app)
        crashes = workers[0].text().count("crash point before_smtp reached")
        figures: dict[str, Any] = {
            "rows": args.rows,
            "max_attempts_configured": args.max_attempts,
            "attempts_per_row": dict(Counter(str(r["attempts"]) for r in rows)),
            "crashes": crashes,
            "dead_letters": sum(1 for r in rows if r["status"] == "failed"),
            "dead_letter_after_s": round(elapsed, 1) if done else None,
            "last_error": rows[0]["last_error"] if rows else None,
            "emails_sent": sink.total(),
            "worker_alive": workers[0].alive(),
            "metrics_failed": metrics_failed(app),
        }
    return figures


def metrics_failed(app: Any) -> float | None:
    """campaign_outbox_emails{status="failed"} summed over kinds, as /metrics serves it (None if absent)."""
    client = app.test_client()
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    if response.status_code != 200:
        return None
    total = None
    for line in response.get_data(as_text=True).splitlines():
        if line.startswith("campaign_outbox_emails{") and 'status="failed"' in line:
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "attempts = OUTBOX_MAX_ATTEMPTS",
            figures["attempts_per_row"] == {str(args.max_attempts): args.rows},
            f"{figures['attempts_per_row']} (rows by attempts)",
        ),
        Target(
            "crashes bounded",
            figures["crashes"] == args.rows * args.max_attempts,
            f"{figures['crashes']} crashes for {args.rows} rows",
        ),
        Target("dead letters", figures["dead_letters"] == args.rows, f"{figures['dead_letters']} failed"),
        Target(
            "dead letters in /metrics",
            figures["metrics_failed"] == args.rows,
            f'campaign_outbox_emails{{status="failed"}} = {figures["metrics_failed"]}',
        ),
        Target("nothing sent", figures["emails_sent"] == 0, str(figures["emails_sent"])),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a08", parse_args, run, check))
