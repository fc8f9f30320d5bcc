"""Migrations: `upgrade head` on an empty database gives exactly the models' schema."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from campaign import create_app
from campaign.extensions import db
from tests.support import base_config


def _diff_after_upgrade(url: str, smtp_port: int) -> list:
    app = create_app(base_config(url, smtp_port))
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        downgrade(revision="base")
        with db.engine.connect() as conn:
            remaining = set(db.inspect(conn).get_table_names()) - {"alembic_version"}
        db.session.remove()
        db.engine.dispose()
    assert remaining == set(), "downgrade left tables behind"
    return diff


def test_sqlite_upgrade_head_matches_models(tmp_path, smtp_port):
    assert _diff_after_upgrade(f"sqlite:///{tmp_path / 'm.db'}", smtp_port) == []


@pytest.mark.integration
def test_postgresql_upgrade_head_matches_models(pg_url, smtp_port):
    assert _diff_after_upgrade(pg_url, smtp_port) == []
