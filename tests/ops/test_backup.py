"""flask backup / restore on SQLite and PostgreSQL: a round trip keeps every row, a database that
holds data is refused unless --force, the keys are checked, and no email marked sent in the backup
is sent again after the restore (RELIABILITY.md 46, the fast version; bench/restore_drill.py is the
large one)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import func, select, update

from campaign import create_app
from campaign.extensions import db
from campaign.models import OutboundEmail, OutboxStatus, Signature
from campaign.models.base import utcnow
from campaign.ops_commands import KEYS_MISMATCH
from campaign.services.demo import seed_demo
from tests.support import PG_ADMIN_URL, base_config, confirm, confirm_path, deliver_due, sign


def addresses(messages: list[EmailMessage]) -> list[str]:
    return sorted(str(m["To"].addresses[0].addr_spec) for m in messages)


def state(app: Flask) -> dict[str, Any]:
    """What a restore must keep: rows per table, the outbox by status, the count, the signers."""
    from campaign.services.counting import signature_count
    from campaign.services.privacy import cipher

    with app.app_context():
        try:
            session = db.session
            tables = {table.name: session.scalar(select(func.count()).select_from(table))
                      for table in db.metadata.sorted_tables}
            outbox = dict(session.execute(
                select(OutboundEmail.idempotency_key, OutboundEmail.status).order_by(OutboundEmail.id)).all())
            emails = sorted(cipher().decrypt(s.email_encrypted) for s in session.scalars(select(Signature)))
            counted = signature_count(session, 1)
        finally:
            db.session.remove()
    return {"tables": tables, "outbox": outbox, "emails": emails, "count": counted}


def populate(app: Flask, mailbox: Any) -> None:
    """Three signers mailed (one confirmed, which may queue letters to officials), one still queued,
    one being sent at backup time."""
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    for n in range(3):
        assert sign(client, name=f"Sent Signer{n}", email=f"sent{n}@example.org").status_code == 303
    assert deliver_due(app) == {"sent": 3}
    assert confirm(client, confirm_path(mailbox.messages[0])).status_code == 303
    assert sign(client, name="Queued Signer", email="queued@example.org").status_code == 303
    assert sign(client, name="Inflight Signer", email="inflight@example.org").status_code == 303
    with app.app_context():
        # A worker had claimed this one when the backup was taken: its lease is still running.
        newest = db.session.scalar(select(func.max(OutboundEmail.id)).where(
            OutboundEmail.from_public_form.is_(True)))
        db.session.execute(update(OutboundEmail).where(OutboundEmail.id == newest).values(
            status=OutboxStatus.SENDING, attempts=1, lease_until=utcnow() + timedelta(seconds=300)))
        db.session.commit()
        db.session.remove()
    with mailbox.lock:
        mailbox.messages.clear()


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=list(args))


def check_round_trip(source: Flask, target: Flask, mailbox: Any, backup_file: Path) -> None:
    before = state(source)
    statuses = before["outbox"]
    sent_before = {key for key, status in statuses.items() if status == OutboxStatus.SENT}
    assert len(sent_before) >= 3 and OutboxStatus.SENDING in statuses.values()

    made = cli(source, "backup", str(backup_file))
    assert made.exit_code == 0, made.output
    assert made.output.startswith("backed up ")
    assert backup_file.stat().st_size > 1000
    assert not backup_file.with_name(backup_file.name + ".partial").exists()

    restored = cli(target, "restore", str(backup_file))
    assert restored.exit_code == 0, restored.output
    assert "restored" in restored.output
    counts = Counter(statuses.values())
    assert "outbox: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)) in restored.output
    assert state(target) == before

    # The workers' code on the restored database: what was queued goes, nothing sent goes again,
    # and the one in flight at backup time waits for its lease, then goes once.
    deliver_due(target)
    after = state(target)["outbox"]
    assert all(after[key] == OutboxStatus.SENT for key in sent_before)
    newly_sent = [key for key, status in after.items()
                  if status == OutboxStatus.SENT and statuses[key] != OutboxStatus.SENT]
    assert len(mailbox.messages) == len(newly_sent)  # one email per row that became sent, no more
    received = addresses(mailbox.messages)
    assert received.count("queued@example.org") == 1
    assert not {"sent0@example.org", "sent1@example.org", "sent2@example.org",
                "inflight@example.org"} & set(received)
    with target.app_context():
        db.session.execute(update(OutboundEmail).where(OutboundEmail.status == OutboxStatus.SENDING)
                           .values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()
    deliver_due(target)
    received = addresses(mailbox.messages)
    assert received.count("inflight@example.org") == 1
    assert received.count("queued@example.org") == 1
    assert not {"sent0@example.org", "sent1@example.org", "sent2@example.org"} & set(received)


def check_refusals(source: Flask, backup_file: Path) -> None:
    # The source holds data: refused, with one line, and nothing changes.
    with source.app_context():
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
    client = source.test_client()
    assert sign(client, name="After Backup", email="after@example.org").status_code == 303
    before = state(source)
    refused = cli(source, "restore", str(backup_file))
    assert refused.exit_code != 0
    assert refused.output.count("\n") == 1 and "not empty" in refused.output and "--force" in refused.output
    assert state(source) == before

    forced = cli(source, "restore", str(backup_file), "--force")
    assert forced.exit_code == 0, forced.output
    assert "after@example.org" not in state(source)["emails"]

    again = cli(source, "backup", str(backup_file))
    assert again.exit_code != 0 and "exists already" in again.output


# --- SQLite -----------------------------------------------------------------------------------------

def test_sqlite_round_trip_refusal_and_no_resend(make_app, mailbox, tmp_path):
    source = make_app()
    populate(source, mailbox)
    check_round_trip(source, make_app(), mailbox, tmp_path / "campaign.sqlite3")
    check_refusals(source, tmp_path / "campaign.sqlite3")


def test_restore_with_other_keys_says_which_key_is_wrong(make_app, mailbox, tmp_path):
    source = make_app()
    populate(source, mailbox)
    backup_file = tmp_path / "b.sqlite3"
    assert cli(source, "backup", str(backup_file)).exit_code == 0

    other_data_key = make_app(SIGNER_DATA_KEYS=Fernet.generate_key().decode())
    result = cli(other_data_key, "restore", str(backup_file))
    assert result.exit_code == KEYS_MISMATCH
    assert "SIGNER_DATA_KEYS cannot decrypt" in result.output

    other_index_key = make_app(BLIND_INDEX_KEY="another-blind-index-key")
    result = cli(other_index_key, "restore", str(backup_file))
    assert result.exit_code == KEYS_MISMATCH
    assert "BLIND_INDEX_KEY is not the one" in result.output


def test_restore_refuses_what_is_not_a_backup(make_app, tmp_path):
    app = make_app()
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    result = cli(app, "restore", str(bogus))
    assert result.exit_code != 0
    assert "not a backup this command wrote" in result.output
    assert cli(app, "restore", str(tmp_path / "missing.dump")).exit_code != 0


# --- PostgreSQL -------------------------------------------------------------------------------------

@pytest.fixture
def second_pg_url(pg_url: str) -> Iterator[str]:
    """An empty database beside this process's test database."""
    name = pg_url.rsplit("/", 1)[1] + "_restore"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
def test_postgresql_round_trip_refusal_and_no_resend(make_pg_app, second_pg_url, smtp_port, mailbox, tmp_path):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed: apt-get install postgresql-client")
    source = make_pg_app()
    populate(source, mailbox)
    # An empty database, as a new server has it: no tables at all.
    target = create_app(base_config(second_pg_url, smtp_port))
    backup_file = tmp_path / "campaign.dump"
    try:
        check_round_trip(source, target, mailbox, backup_file)
        assert backup_file.read_bytes()[:5] == b"PGDMP"
        # A SQLite backup is not restored into PostgreSQL.
        sqlite_file = tmp_path / "x.sqlite3"
        sqlite_file.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
        wrong = cli(target, "restore", str(sqlite_file), "--force")
        assert wrong.exit_code != 0 and "is a sqlite backup, and the database is postgresql" in wrong.output
        check_refusals(target, backup_file)
    finally:
        with target.app_context():
            db.session.remove()
            db.engine.dispose()
