"""The outbox sweep remembers when it last published a row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 18:00:00

"""
from alembic import op
import sqlalchemy as sa

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN of a nullable column: no table rewrite on PostgreSQL, no rebuild on SQLite.
    op.add_column('outbound_emails', sa.Column('swept_at', campaign.models.base.UTCDateTime(timezone=True),
                                               nullable=True))


def downgrade():
    op.drop_column('outbound_emails', 'swept_at')
