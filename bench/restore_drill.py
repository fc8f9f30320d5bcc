"""Restore drill (RELIABILITY.md 46): N signatures on PostgreSQL, backed up with `flask backup`'s
code, restored into an empty database with `flask restore`'s code, then checked: every count
equal, and the workers' send code run against the restored outbox sends no email that the backup
had marked sent.

    .venv/bin/python bench/restore_drill.py                 # 1,000,000 signatures
    .venv/bin/python bench/restore_drill.py --rows 100000

Prints the figures and writes them, stamped with the git commit, to bench/results/. Talks only to
the local PostgreSQL (BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test) and an
SMTP sink of its own on 127.0.0.1. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import func, select, text, update  # noqa: E402

from campaign import create_app  # noqa: E402
from campaign.extensions import db  # noqa: E402
from campaign.mail.sink import start_sink  # noqa: E402
from campaign.models import OutboundEmail, OutboxStatus, Signature, SignatureStatus  # noqa: E402
from campaign.models.base import utcnow  # noqa: E402
from campaign.services import backup as backups  # noqa: E402
from campaign.services.counting import signature_count  # noqa: E402
from campaign.services.demo import seed_demo  # noqa: E402
from campaign.services.emails import canonical_email  # noqa: E402
from campaign.services.outbox import deliver, due_emails  # noqa: E402
from campaign.services.privacy import SignerCipher  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COUNTRIES = ("DE", "FR", "GB", "US", "IT", "CA", "JP", "BR", "IN", "AU", "ZA", "AR")
POOL = 1000  # distinct pre-encrypted names, reused


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def recreate(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_app(url: str, keys: dict[str, str], smtp_port: int) -> Flask:
    return create_app({
        "CAMPAIGN_ENV": "testing", "BASE_URL": "http://drill.test", "DATABASE_URL": url,
        "CELERY_BROKER_URL": "memory://", "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp_port,
        "MAIL_SUPPRESS_SEND": False, "MAIL_DEFAULT_SENDER": "Drill <drill@drill.test>",
        "LOG_LEVEL": "WARNING", **keys})


def _copy_columns(model: Any, given: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The columns COPY writes: the drill's values, plus any other column's scalar default (so a
    column added by a later migration does not break the drill)."""
    names, extra = list(given), []
    for column in model.__table__.columns:
        if column.name in given or (column.primary_key and column.name == "id"):
            continue
        default = column.default
        if default is not None and default.is_scalar:
            names.append(column.name)
            extra.append(default.arg)
    return names, extra


def populate(app: Flask, rows: int, queued: int, sending: int, lease: int) -> dict[str, Any]:
    """Signatures and their confirmation emails, written with COPY. All but the last
    queued + sending rows were mailed (status sent); those are queued, or being sent right now."""
    started = time.monotonic()
    with app.app_context():
        upgrade()
        seed_demo(db.session)
        db.session.commit()
        petition_id = int(db.session.scalar(text("SELECT id FROM petitions ORDER BY id LIMIT 1")))
        config = app.config
        cipher = SignerCipher(config["SIGNER_DATA_KEYS"], config["BLIND_INDEX_KEY"])
        names = [cipher.encrypt(f"Drill Person{k}") for k in range(POOL)]
        now = utcnow()
        mailed = rows - queued - sending
        confirmed = 0
        indexes: list[str] = []
        signature_values = {"petition_id": 0, "name_encrypted": b"", "email_encrypted": b"",
                            "email_index": "", "country": "", "status": "", "created_at": now,
                            "confirmed_at": None}
        sig_cols, sig_extra = _copy_columns(Signature, signature_values)
        outbox_values = {"idempotency_key": "", "kind": "", "petition_id": 0, "signature_id": 0,
                         "recipient_index": "", "from_public_form": True, "status": "", "attempts": 0,
                         "next_attempt_at": now, "lease_until": None, "last_error": "", "created_at": now,
                         "sent_at": None}
        out_cols, out_extra = _copy_columns(OutboundEmail, outbox_values)
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy(f"COPY signatures ({', '.join(['id', *sig_cols])}) FROM STDIN") as copy:
                for i in range(1, rows + 1):
                    created = now - timedelta(seconds=rows - i + 60)
                    if i <= mailed:
                        # Every address distinct and really encrypted and indexed (the restore's key
                        # check reads them back); names repeat, which costs nothing to the drill.
                        address = f"signer{i}@drill.invalid"
                        name, email = names[i % POOL], cipher.encrypt(address)
                        # Most mailed signers confirmed; a share never did (their rows must stay sent too).
                        status = SignatureStatus.CONFIRMED if i % 10 < 7 else SignatureStatus.PENDING
                    else:
                        label = "queued" if i <= mailed + queued else "inflight"
                        address = f"{label}{i}@drill.test"
                        name, email = cipher.encrypt(f"Drill {label.title()}{i}"), cipher.encrypt(address)
                        status = SignatureStatus.PENDING
                    confirmed += status == SignatureStatus.CONFIRMED
                    index = cipher.blind_index(canonical_email(address))
                    indexes.append(index)
                    copy.write_row([i, petition_id, name, email, index, COUNTRIES[i % len(COUNTRIES)],
                                    str(status), created,
                                    created + timedelta(seconds=30) if status == SignatureStatus.CONFIRMED
                                    else None, *sig_extra])
            with cursor.copy(f"COPY outbound_emails ({', '.join(['id', *out_cols])}) FROM STDIN") as copy:
                for i in range(1, rows + 1):
                    created = now - timedelta(seconds=rows - i + 60)
                    if i <= mailed:
                        status, attempts, lease_until, sent_at = OutboxStatus.SENT, 1, None, created
                    elif i <= mailed + queued:
                        status, attempts, lease_until, sent_at = OutboxStatus.QUEUED, 0, None, None
                    else:  # claimed by a worker a moment before the backup
                        status, attempts = OutboxStatus.SENDING, 1
                        lease_until, sent_at = now + timedelta(seconds=lease), None
                    copy.write_row([i, f"form:{i}:1", "signature_confirmation", petition_id, i,
                                    indexes[i - 1], True, str(status), attempts, created, lease_until, "",
                                    created, sent_at, *out_extra])
            cursor.execute("SELECT setval(pg_get_serial_sequence('signatures', 'id'), %s)", (rows,))
            cursor.execute("SELECT setval(pg_get_serial_sequence('outbound_emails', 'id'), %s)", (rows,))
            cursor.execute("UPDATE petition_counters SET confirmed = CASE WHEN shard = 0 THEN %s ELSE 0 END "
                           "WHERE petition_id = %s", (confirmed, petition_id))
            raw.commit()
            cursor.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
        db.session.remove()
    return {"seconds": time.monotonic() - started, "confirmed": confirmed}


def snapshot(app: Flask) -> dict[str, Any]:
    with app.app_context():
        try:
            session = db.session
            signatures = dict(session.execute(
                select(Signature.status, func.count()).group_by(Signature.status)).all())
            outbox = dict(session.execute(
                select(OutboundEmail.status, func.count()).group_by(OutboundEmail.status)).all())
            sent_keys = session.scalar(select(func.count()).select_from(OutboundEmail).where(
                OutboundEmail.status == OutboxStatus.SENT))
            petition_id = int(session.scalar(text("SELECT id FROM petitions ORDER BY id LIMIT 1")))
            return {"signatures": {str(k): int(v) for k, v in signatures.items()},
                    "outbox": {str(k): int(v) for k, v in outbox.items()},
                    "sent": int(sent_keys or 0), "signature_count": signature_count(session, petition_id)}
        finally:
            db.session.remove()


def sweep(app: Flask) -> dict[str, int]:
    """What the workers do on the restored database: send every due row (flask outbox-sweep's code)."""
    results: dict[str, int] = {}
    with app.app_context():
        try:
            while True:
                due = due_emails(db.session, limit=10_000)
                if not due:
                    break
                for email_id, _kind in due:
                    outcome = deliver(db.session, email_id)
                    results[outcome] = results.get(outcome, 0) + 1
        finally:
            db.session.remove()
    return results


def recipients(handler: Any) -> list[str]:
    with handler.lock:
        return [str(m["To"].addresses[0].addr_spec) for m in handler.messages]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="signatures (default 1,000,000)")
    parser.add_argument("--queued", type=int, default=200, help="emails still queued at backup time")
    parser.add_argument("--sending", type=int, default=20, help="emails being sent at backup time")
    parser.add_argument("--keep", action="store_true", help="keep the two databases and the dump")
    args = parser.parse_args()
    if args.rows <= args.queued + args.sending:
        parser.error("--rows must be larger than --queued + --sending")
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        print("pg_dump and pg_restore are needed: apt-get install postgresql-client", file=sys.stderr)
        return 2

    keys = {"SECRET_KEY": Fernet.generate_key().decode(), "SIGNER_DATA_KEYS": Fernet.generate_key().decode(),
            "BLIND_INDEX_KEY": Fernet.generate_key().decode()}
    source_db, target_db = "campaign_drill_source", "campaign_drill_restored"
    controller, sink = start_sink()
    workdir = Path(tempfile.mkdtemp(prefix="restore-drill-"))
    dump = workdir / "campaign.dump"
    apps: list[Flask] = []
    try:
        recreate(source_db)
        recreate(target_db)
        source = build_app(database_url(source_db), keys, controller.port)
        target = build_app(database_url(target_db), keys, controller.port)
        apps += [source, target]
        lease = int(source.config["OUTBOX_LEASE_SECONDS"])
        print(f"populating {args.rows:,} signatures ...", flush=True)
        made = populate(source, args.rows, args.queued, args.sending, lease)
        before = snapshot(source)
        with source.app_context():
            database_bytes = int(db.session.scalar(text("SELECT pg_database_size(current_database())")))
            db.session.remove()

        with source.app_context():
            backed_up = backups.backup_database(db.engine, dump)
            db.session.remove()
        print(f"backed up in {backed_up.seconds:.1f} s ({backed_up.size / 1_048_576:.1f} MiB)", flush=True)
        with target.app_context():
            restored = backups.restore_database(db.engine, dump)
            problems = backups.key_problems(db.session, SignerCipher(keys["SIGNER_DATA_KEYS"],
                                                                     keys["BLIND_INDEX_KEY"]))
            db.session.remove()
        print(f"restored in {restored.seconds:.1f} s", flush=True)
        after = snapshot(target)

        first = sweep(target)
        after_first = recipients(sink)
        # The rows a worker held at backup time come back once their lease has run out.
        with target.app_context():
            db.session.execute(update(OutboundEmail).where(OutboundEmail.status == OutboxStatus.SENDING)
                               .values(lease_until=utcnow() - timedelta(seconds=1)))
            db.session.commit()
            db.session.remove()
        second = sweep(target)
        everyone = recipients(sink)
        resent = [a for a in everyone if a.endswith("@drill.invalid")]  # the rows marked sent
        final = snapshot(target)
    finally:
        for app in apps:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        controller.stop()
        if not args.keep:
            drop(source_db)
            drop(target_db)
            shutil.rmtree(workdir, ignore_errors=True)

    queued_to = [a for a in everyone if a.startswith("queued")]
    inflight_to = [a for a in everyone if a.startswith("inflight")]
    # A row in flight at backup time waits for its lease (5 minutes from the claim); when the
    # drill's own populate, backup and restore took longer than that, it goes in the first sweep.
    waited = len([a for a in inflight_to if a not in after_first])
    checks = {
        "counts_equal": before == after,
        "keys_fit": problems == [],
        "queued_sent_once": len(queued_to) == len(set(queued_to)) == args.queued,
        "inflight_sent_once": len(inflight_to) == len(set(inflight_to)) == args.sending,
        "no_resend": resent == [] and len(everyone) == args.queued + args.sending
        and final["sent"] == before["sent"] + args.queued + args.sending,
    }
    result = {
        "benchmark": "restore_drill",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": "python bench/restore_drill.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "pg_dump": subprocess.run(["pg_dump", "--version"], capture_output=True, text=True,
                                              check=False).stdout.strip()},
        "rows": args.rows,
        "populate_seconds": round(made["seconds"], 1),
        "database_mib": round(database_bytes / 1_048_576, 1),
        "backup_seconds": round(backed_up.seconds, 2),
        "backup_mib": round(backed_up.size / 1_048_576, 1),
        "restore_seconds": round(restored.seconds, 2),
        "before": before,
        "after_restore": after,
        "sent_after_restore": {"first_sweep": first, "after_lease": second,
                               "inflight_waited_for_lease": waited, "resent": len(resent)},
        "checks": checks,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"restore-drill-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"signatures: {args.rows:,} ({made['confirmed']:,} confirmed); "
          f"database {result['database_mib']} MiB")
    print(f"backup:  {result['backup_seconds']} s, {result['backup_mib']} MiB (pg_dump, custom format)")
    print(f"restore: {result['restore_seconds']} s into an empty database (pg_restore + ANALYZE)")
    print(f"counts equal: {checks['counts_equal']}; emails sent after restore: {len(queued_to)} queued "
          f"+ {len(inflight_to)} in flight at backup ({waited} after their lease ran out); "
          f"re-sent: {len(resent)}")
    print(f"checks: {'all passed' if all(checks.values()) else checks}")
    print(f"written to {out.relative_to(ROOT)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
