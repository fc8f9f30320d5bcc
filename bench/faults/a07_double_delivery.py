"""A7 — concurrent double delivery (RELIABILITY.md test 7).

--emails outbox rows; the same outbox.send task is published twice in a row for each of them (the
two copies side by side in the queue) before two Celery workers start, each with one pool process:
the workers take the two copies of a row at the same moment, 1,000 times over. The conditional
UPDATE that claims a row lets exactly one of them send.

Reports emails sent, and the executions (sent / skipped) per worker.
Target: emails = --emails, each address once.
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
    parser.add_argument("--emails", type=int, default=1000, help="rows, each published twice (default: 1000)")
    parser.add_argument("--copies", type=int, default=2, help="tasks published per row (default: 2)")
    parser.add_argument(
        "--workers", type=int, default=2, help="Celery workers, one process each (default: 2)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a07", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        config = app_config(database, redis.url(), sink.port)
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        addresses = [address("a07", i) for i in range(args.emails)]
        ids = queue_confirmations(app, addresses)
        publish(app, list(ids.values()), copies=args.copies)
        log(f"published {args.copies} copies of each of {args.emails} tasks; starting the workers")
        started = time.monotonic()
        workers = start_workers(env, work, [f"w{i}" for i in range(args.workers)], concurrency=1)
        stack.callback(stop_all, workers)
        total = args.emails * args.copies
        wait_for(lambda: sum(len(w.outcomes()) for w in workers) >= total, args.timeout, 0.5)
        elapsed = time.monotonic() - started
        time.sleep(1)
        figures: dict[str, Any] = delivery_figures(sink, addresses)
        figures["emails_sent"] = sink.total()
        figures["tasks_published"] = total
        figures["executions"] = dict(Counter(o for w in workers for o in w.outcomes()))
        figures["executions_by_worker"] = {w.name: dict(Counter(w.outcomes())) for w in workers}
        figures["outbox"] = outbox_summary(app)
        figures["seconds"] = round(elapsed, 1)
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "emails sent",
            figures["emails_sent"] == args.emails and figures["delivered"] == args.emails,
            f"{figures['emails_sent']} for {args.emails} rows ({figures['duplicates']} duplicates)",
        ),
        Target(
            "every task ran, one per row sent",
            figures["executions"].get("sent", 0) == args.emails
            and sum(figures["executions"].values()) == figures["tasks_published"],
            str(figures["executions"]),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a07", parse_args, run, check))
