"""A5 — SMTP permanent failure (RELIABILITY.md test 5).

--emails confirmation emails are published; the SMTP sink answers "550 5.1.1 no such user" to
--refused of the addresses and accepts the rest. Backoff and the sweep are set short
(OUTBOX_BACKOFF_BASE=1, OUTBOX_SWEEP_INTERVAL=1, OUTBOX_SWEEP_GRACE=0), so a wrongful retry would
show up within --watch seconds, which the run then waits.

Reports the RCPT attempts each refused address got (retries = attempts - 1), their outbox state,
and each one's suppression state (a hard bounce for every campaign, under its blind index).
Target: 0 retries, 100% suppressed. Then a second confirmation is queued for every refused
address (as when the person signs again): none may reach the SMTP server (each cancelled as
"bounced"), and the accepted addresses stay unsuppressed.
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
        states = suppression_states(app, addresses)

        # Later mail to a suppressed address: a second confirmation each, as if they signed again.
        again = queue_again(app, [ids[a] for a in refused])
        publish(app, again)
        wait_for(
            lambda: all(r["status"] not in ("queued", "sending") for r in outbox_rows(app)), args.timeout, 0.5
        )
        later = [r for r in outbox_rows(app) if r["id"] in set(again)]
        with sink.lock:
            rcpts_after = {a: len(sink.refused.get(a, [])) for a in refused}
        accepted = [a for a in addresses if a not in set(refused)]
        figures: dict[str, Any] = {
            "refused_addresses": len(refused),
            "smtp_attempts_to_refused": sum(rcpts.values()),
            "retries_to_refused": sum(max(0, n - 1) for n in rcpts.values()),
            "refused_rows_by_status": dict(Counter(r["status"] for r in refused_rows)),
            "refused_rows_attempts": dict(Counter(str(r["attempts"]) for r in refused_rows)),
            "last_error_example": refused_rows[0]["last_error"] if refused_rows else None,
            # Per refused address (by position, never the address): its suppression, or null.
            "suppression_of_refused": [states[a] for a in refused],
            "suppressed": sum(1 for a in refused if states[a] == "bounce"),
            "suppressed_share": (sum(1 for a in refused if states[a] == "bounce") / len(refused))
            if refused
            else 1.0,
            "accepted_addresses_suppressed": sum(1 for a in addresses if a not in set(refused) and states[a]),
            "later_emails_to_refused": len(later),
            "later_emails_by_outcome": dict(Counter(f"{r['status']}:{r['reason']}" for r in later)),
            "smtp_attempts_after_suppression": sum(rcpts_after.values()) - sum(rcpts.values()),
        }
        others = delivery_figures(sink, accepted)
        figures["other_addresses_delivered"] = others["delivered"]
        figures["other_addresses_duplicates"] = others["duplicates"]
        figures["refused_delivered"] = sum(1 for a in refused if sink.snapshot()[a])
    return figures


def suppression_states(app: Any, emails: list[str]) -> dict[str, str | None]:
    """Each address's suppression for every campaign (its reason), found by its blind index; None
    when it has none."""
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import Suppression
    from campaign.services.suppression import email_index_of

    with app.app_context():
        try:
            indexes = {e: email_index_of(e) for e in emails}
            found: dict[str, str] = dict(
                db.session.execute(
                    select(Suppression.email_index, Suppression.reason).where(
                        Suppression.campaign_id.is_(None), Suppression.email_index.in_(indexes.values())
                    )
                ).all()
            )
            return {e: found.get(index) for e, index in indexes.items()}
        finally:
            db.session.remove()


def queue_again(app: Any, email_ids: list[int]) -> list[int]:
    """A second confirmation row for each of these rows' signatures (form:<signature>:2)."""
    from sqlalchemy import insert, select

    from campaign.extensions import db
    from campaign.models import OutboundEmail

    with app.app_context():
        try:
            rows = (
                db.session.execute(select(OutboundEmail).where(OutboundEmail.id.in_(email_ids)))
                .scalars()
                .all()
            )
            values = [
                {
                    "idempotency_key": f"form:{r.signature_id}:2",
                    "kind": r.kind,
                    "petition_id": r.petition_id,
                    "signature_id": r.signature_id,
                    "recipient_index": r.recipient_index,
                    "from_public_form": True,
                }
                for r in rows
            ]
            new = (
                list(db.session.scalars(insert(OutboundEmail).returning(OutboundEmail.id), values))
                if values
                else []
            )
            db.session.commit()
            return new
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
            "100% of the refused addresses suppressed (hard bounce, every campaign)",
            figures["suppressed"] == figures["refused_addresses"],
            f"{figures['suppressed']} of {figures['refused_addresses']}",
        ),
        Target(
            "no later email to a suppressed address reaches SMTP; nobody else suppressed",
            figures["smtp_attempts_after_suppression"] == 0
            and figures["later_emails_by_outcome"] == {"cancelled:bounced": figures["refused_addresses"]}
            and figures["accepted_addresses_suppressed"] == 0,
            f"{figures['smtp_attempts_after_suppression']} SMTP attempts, "
            f"{figures['later_emails_by_outcome']}, "
            f"{figures['accepted_addresses_suppressed']} accepted addresses suppressed",
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
