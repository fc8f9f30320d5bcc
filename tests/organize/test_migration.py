"""Migration 0002 creates exactly the organizer tables and columns the models declare, on SQLite
and PostgreSQL, and its downgrade removes them. (tests/test_migrations.py checks the whole
schema; this one looks only at what 0002 owns, so it holds while other migrations are due.)"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from campaign import create_app
from campaign.extensions import db
from tests.support import base_config

TABLES = {"users", "attempt_counters", "campaign_members", "invitations", "audit_events",
          "offline_signatures", "campaign_targets"}
COLUMNS = {("petitions", "closes_at"), ("petitions", "updated_at"), ("petitions", "submitted_at"),
           ("petitions", "review_note"), ("signatures", "invalidated_at"), ("signatures", "invalidation_reason")}


def _touches_0002(item: Any) -> bool:
    if isinstance(item, list):
        return any(_touches_0002(i) for i in item)
    kind = item[0]
    if kind.endswith("_table"):
        return item[1].name in TABLES
    if kind.endswith("_column"):
        return item[2] in TABLES or (item[2], item[3].name) in COLUMNS
    if kind.startswith("modify_"):
        return item[2] in TABLES or (item[2], item[3]) in COLUMNS
    if kind.endswith(("_index", "_constraint", "_fk")):
        table = getattr(item[1], "table", None)
        return table is not None and table.name in TABLES
    return True  # anything unexpected counts, so it is looked at


def _check(url: str, smtp_port: int) -> None:
    app = create_app(base_config(url, smtp_port))
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(revision="0002")
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)
            tables = set(db.inspect(conn).get_table_names())
        downgrade(revision="0001")
        with db.engine.connect() as conn:
            after = set(db.inspect(conn).get_table_names())
            petition_columns = {c["name"] for c in db.inspect(conn).get_columns("petitions")}
        downgrade(revision="base")
        db.session.remove()
        db.engine.dispose()
    assert tables >= TABLES
    assert [item for item in diff if _touches_0002(item)] == []
    assert not TABLES & after and not {c for t, c in COLUMNS if t == "petitions"} & petition_columns


def test_the_filter_sees_a_missing_table():
    from campaign.models import User

    assert _touches_0002(("add_table", User.__table__))
    assert not _touches_0002(("add_table", type("T", (), {"name": "deliveries"})()))


def test_0002_on_sqlite(tmp_path, smtp_port):
    _check(f"sqlite:///{tmp_path / 'm.db'}", smtp_port)


@pytest.mark.integration
def test_0002_on_postgresql(pg_url, smtp_port):
    _check(pg_url, smtp_port)
