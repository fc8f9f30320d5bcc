"""A5 — SMTP permanent failure (RELIABILITY.md test 5).

--emails confirmation emails are published; the SMTP sink answers "550 5.1.1 no such user" to
--refused of the addresses and accepts the rest. Backoff and the sweep are set short
(OUTBOX_BACKOFF_BASE=1, OUTBOX_SWEEP_INTERVAL=1, OUTBOX_SWEEP_GRACE=0), so a wrongful retry would
show up within --watch seconds, which the run then waits.

Reports the RCPT attempts each refused address got (retries = attempts - 1), their outbox state,
and whether they are on the suppression list. Target: 0 retries, 100% suppressed. Suppressing an
address on a hard bounce belongs to a later issue (RELIABILITY.md test 22); until it is built the
suppressed count is reported, not required.
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
    delivery_figures,
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
    parser.add_argument("--emails", type=int, default=100, help="emails sent (default: 100)")
    parser.add_argument("--refused", type=int, default=20, help="addresses answered 550 (default: 20)")
    parser.add_argument(
        "--watch",
        type=float,
        default=30.0,
        help="seconds to watch for retries after the last outcome (default: 30)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for the outcomes (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a05", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            OUTBOX_BACKOFF_BASE=1,
            OUTBOX_BACKOFF_MAX=2,
            OUTBOX_SWEEP_INTERVAL=1,
            OUTBOX_SWEEP_GRACE=0,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        beat = Beat(env, work, wait=False)
        stack.callback(beat.stop)
        workers = start_workers(env, work, ["worker"], 2)
        stack.callback(stop_all, workers)
        beat.wait_ready()

        addresses = [address("a05", i) for i in range(args.emails)]
        step = max(1, args.emails // max(1, args.refused))
        refused = addresses[::step][: args.refused]
        for bad in refused:
            sink.refuse(bad, "550 5.1.1 no such user")
        ids = queue_confirmations(app, addresses)
        publish(app, list(ids.values()))
        wait_for(lambda: all(r["status"] in ("sent", "failed") for r in outbox_rows(app)), args.timeout, 0.5)
        log(f"every row has an outcome; watching {args.watch:.0f} s for retries")
        time.sleep(args.watch)

        rows = {r["id"]: r for r in outbox_rows(app)}
        refused_rows = [rows[ids[a]] for a in refused]
        with sink.lock:
            rcpts = {a: len(sink.refused.get(a, [])) for a in refused}
        accepted = [a for a in addresses if a not in set(refused)]
        figures: dict[str, Any] = {
            "refused_addresses": len(refused),
            "smtp_attempts_to_refused": sum(rcpts.values()),
            "retries_to_refused": sum(max(0, n - 1) for n in rcpts.values()),
            "refused_rows_by_status": dict(Counter(r["status"] for r in refused_rows)),
            "refused_rows_attempts": dict(Counter(str(r["attempts"]) for r in refused_rows)),
            "last_error_example": refused_rows[0]["last_error"] if refused_rows else None,
            "suppressed": suppressed_count(app, refused),
            "suppression_on_hard_bounce": "not built yet (a later issue, RELIABILITY.md test 22)",
        }
        others = delivery_figures(sink, accepted)
        figures["other_addresses_delivered"] = others["delivered"]
        figures["other_addresses_duplicates"] = others["duplicates"]
        figures["refused_delivered"] = sum(1 for a in refused if sink.snapshot()[a])
    return figures


def suppressed_count(app: Any, emails: list[str]) -> int | None:
    """How many of these addresses are on the suppression list; None if there is no such list."""
    try:
        from campaign.services.suppression import is_suppressed
    except ImportError:
        return None
    from campaign.extensions import db

    with app.app_context():
        try:
            return sum(1 for e in emails if is_suppressed(db.session, e))
        finally:
            db.session.remove()


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "0 retries to refused addresses",
            figures["retries_to_refused"] == 0
            and figures["smtp_attempts_to_refused"] == figures["refused_addresses"],
            f"{figures['smtp_attempts_to_refused']} attempts for {figures['refused_addresses']} addresses",
        ),
        Target(
            "refused rows failed after one attempt",
            figures["refused_rows_by_status"] == {"failed": figures["refused_addresses"]}
            and figures["refused_rows_attempts"] == {"1": figures["refused_addresses"]},
            f"{figures['refused_rows_by_status']}, attempts {figures['refused_rows_attempts']}",
        ),
        Target(
            "the others delivered once",
            figures["other_addresses_delivered"] == args.emails - figures["refused_addresses"]
            and figures["other_addresses_duplicates"] == 0,
            f"{figures['other_addresses_delivered']}, {figures['other_addresses_duplicates']} duplicates",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a05", parse_args, run, check))
