"""A9 — transaction coupling (RELIABILITY.md test 9).

sign_petition writes the signature and its confirmation email's outbox row in the caller's
transaction; the task is published after commit. --rounds times, in one long-lived session (as a
CLI command or a task would hold): sign an address and roll back; sign another address, roll back,
then sign it again and commit. A Celery worker and beat run all along. Every publish is recorded
(the in-process publisher is wrapped), so a task published for a row that was rolled back is seen
even though the worker would only skip it.

Reports, after the rollbacks and after the commits: signatures, outbox rows, tasks published for
rolled-back rows, and emails. Target: 0 after rollback; exactly 1 after commit.
--database sqlite runs it on a SQLite file with the filesystem broker (RELIABILITY.md test 12).
"""

from __future__ import annotations

import argparse
import contextlib
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
    delivery_figures,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    start_workers,
    stop_all,
    wait_for,
    workdir,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100, help="rollback / commit rounds (default: 100)")
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="PostgreSQL with Redis, or SQLite with the filesystem broker (default: postgresql)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for the emails (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def counts(app: Any) -> tuple[int, int]:
    from sqlalchemy import func, select

    from campaign.extensions import db
    from campaign.models import OutboundEmail, Signature

    with app.app_context():
        try:
            return (
                int(db.session.scalar(select(func.count()).select_from(Signature)) or 0),
                int(db.session.scalar(select(func.count()).select_from(OutboundEmail)) or 0),
            )
        finally:
            db.session.remove()


def sign_in_session(address_: str) -> None:
    """sign_petition in the current session's transaction, flushed; the caller ends it."""
    from campaign.extensions import db
    from campaign.services.emails import parse_email
    from campaign.services.petitions import petition_by_slug
    from campaign.services.signing import SignerInput, sign_petition

    petition = petition_by_slug(db.session, "g20-chechnya")
    assert petition is not None
    sign_petition(
        db.session, petition, SignerInput(name="Rosalind Franklin", email=parse_email(address_), country="GB")
    )
    db.session.flush()


def config_for(
    args: argparse.Namespace, stack: contextlib.ExitStack, work: Path, sink: Sink
) -> dict[str, str]:
    """The app's config for the chosen database and broker (a private Redis for PostgreSQL)."""
    if args.database == "postgresql":
        database = stack.enter_context(fresh_database("a09", args.keep))
        redis = RedisServer(work)
        stack.callback(redis.close)
        # The grace keeps the sweep off a row whose own task is on its way: every publish counts.
        return app_config(database, redis.url(), sink.port, OUTBOX_SWEEP_INTERVAL=1, OUTBOX_SWEEP_GRACE=10)
    return app_config(
        f"sqlite:///{work / 'campaign.db'}",
        "filesystem://",
        sink.port,
        mode="development",
        CELERY_BROKER_FOLDER=str(work / "broker"),
        OUTBOX_SWEEP_INTERVAL=1,
        OUTBOX_SWEEP_GRACE=10,
        DEV_MAILBOX="false",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        sink = Sink()
        stack.callback(sink.stop)
        config = config_for(args, stack, work, sink)
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        env = env_for(config)
        if args.database == "postgresql":
            beat = Beat(env, work, wait=False)
            stack.callback(beat.stop)
            workers = start_workers(env, work, ["worker"], 2)
            beat.wait_ready()
        else:  # the embedded default: one worker with beat inside (Procfile.dev)
            workers = [CeleryWorker("worker", env, work, concurrency=1, beat=True)]
        stack.callback(stop_all, workers)

        published: list[int] = []
        publish = app.extensions["campaign.publish"]

        def recording(email_id: int, queue: str) -> None:
            published.append(email_id)
            publish(email_id, queue)

        app.extensions["campaign.publish"] = recording
        from campaign.extensions import db

        only_rolled_back = [address("a09rollback", i) for i in range(args.rounds)]
        committed = [address("a09commit", i) for i in range(args.rounds)]
        with app.app_context():
            try:
                for n in range(args.rounds):
                    sign_in_session(only_rolled_back[n])
                    db.session.rollback()
                    sign_in_session(committed[n])
                    db.session.rollback()
                after_rollback = counts(app)
                log(
                    f"after {2 * args.rounds} rollbacks: {after_rollback[0]} signatures, "
                    f"{after_rollback[1]} outbox rows; {len(published)} publishes"
                )
                published_after_rollback = len(published)
                for n in range(args.rounds):
                    sign_in_session(committed[n])
                    db.session.commit()
            finally:
                db.session.remove()
        after_commit = counts(app)
        wait_for(lambda: all(sink.snapshot()[a] for a in committed), args.timeout, 0.5)
        # Long enough for a wrongly published task, or a second sweep, to send something.
        time.sleep(5)
        delivered = delivery_figures(sink, committed)
        figures: dict[str, Any] = {
            "database": args.database,
            "after_rollback": {
                "signatures": after_rollback[0],
                "outbox_rows": after_rollback[1],
                "tasks_published": published_after_rollback,
                "emails": sum(sink.snapshot()[a] for a in only_rolled_back),
            },
            "after_commit": {
                "signatures": after_commit[0],
                "outbox_rows": after_commit[1],
                "tasks_published": len(published) - published_after_rollback,
                "emails_delivered": delivered["delivered"],
                "duplicates": delivered["duplicates"],
                "missing": delivered["missing"],
            },
            "emails_to_rolled_back_only_addresses": sum(sink.snapshot()[a] for a in only_rolled_back),
        }
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    back, done = figures["after_rollback"], figures["after_commit"]
    return [
        Target(
            "after rollback: 0 rows and 0 emails",
            back["signatures"] == 0
            and back["outbox_rows"] == 0
            and back["tasks_published"] == 0
            and figures["emails_to_rolled_back_only_addresses"] == 0,
            f"{back['signatures']} signatures, {back['outbox_rows']} outbox rows, "
            f"{back['tasks_published']} tasks, {figures['emails_to_rolled_back_only_addresses']} emails",
        ),
        Target(
            "after commit: exactly 1 each",
            done["signatures"] == args.rounds
            and done["outbox_rows"] == args.rounds
            and done["tasks_published"] == args.rounds
            and done["emails_delivered"] == args.rounds
            and done["duplicates"] == 0,
            f"{done['signatures']} signatures, {done['outbox_rows']} rows, {done['tasks_published']} "
            f"tasks, {done['emails_delivered']} emailed, {done['duplicates']} duplicates "
            f"for {args.rounds} commits",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a09", parse_args, run, check))
