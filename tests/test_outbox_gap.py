"""What stands between the SMTP server's 250 and the row recorded sent: the stretch in which a
crash sends an email twice (RELIABILITY.md A1's documented gap). On PostgreSQL it is one
autocommitted statement on a connection already held; on SQLite the relay does not hold the
database's write lock while it talks to the SMTP server."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from sqlalchemy import event

from campaign.extensions import db
from campaign.models import OutboundEmail, OutboxStatus
from campaign.services import outbox
from campaign.services.demo import seed_demo
from tests.support import sign


def _seeded(app: Any, **fields: Any) -> Any:
    """The demo petition signed once; the outbox row's id."""
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    assert sign(client, **fields).status_code == 303
    with app.app_context():
        email_id = db.session.query(OutboundEmail.id).scalar()
        db.session.remove()
    return email_id


def test_after_the_250_one_autocommitted_statement_records_the_email_sent(make_pg_app, pg_url, mailbox,
                                                                          monkeypatch):
    app = make_pg_app()
    email_id = _seeded(app)
    accepted = False
    after: list[dict[str, Any]] = []
    real_send = outbox.send_message

    def send(message: Any) -> None:
        nonlocal accepted
        real_send(message)
        accepted = True

    def seen_elsewhere() -> str:
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as other:
            return other.execute("SELECT status FROM outbound_emails WHERE id = %s", (email_id,)).fetchone()[0]

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if accepted and not after:
            after.append({"statement": statement.split()[0], "autocommit": conn.connection.dbapi_connection.autocommit,
                          # Another connection reads the row right after this one statement.
                          "status_elsewhere": seen_elsewhere()})

    monkeypatch.setattr(outbox, "send_message", send)
    with app.app_context():
        event.listen(db.engine, "after_cursor_execute", executed)
        try:
            assert outbox.deliver(db.session, email_id) == "sent"
        finally:
            event.remove(db.engine, "after_cursor_execute", executed)
            db.session.remove()
    assert len(mailbox.messages) == 1
    assert after == [{"statement": "UPDATE", "autocommit": True, "status_elsewhere": OutboxStatus.SENT}]


def test_on_sqlite_the_relay_does_not_hold_the_write_lock_while_it_sends(make_app, tmp_path, mailbox, monkeypatch):
    app = make_app()
    email_id = _seeded(app)
    path = app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    wrote: list[str] = []
    real_send = outbox.send_message

    def send(message: Any) -> None:
        # What the web does while the relay talks to the SMTP server: take the write lock.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            wrote.append("ok")
        except sqlite3.OperationalError as error:
            wrote.append(str(error))
        finally:
            other.close()
        real_send(message)

    monkeypatch.setattr(outbox, "send_message", send)
    with app.app_context():
        try:
            assert outbox.deliver(db.session, email_id) == "sent"
        finally:
            db.session.remove()
    assert wrote == ["ok"]
    assert len(mailbox.messages) == 1
