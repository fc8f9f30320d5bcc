"""Background exports run under a lease: the reach job takes back one whose worker died.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 10:00:00

"""
from datetime import UTC, datetime, timedelta

from alembic import op
import sqlalchemy as sa

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (as in 0009): a batch rebuild on SQLite would drop and recreate the table.
    op.add_column('signature_exports', sa.Column('attempts', sa.Integer(), nullable=False,
                                                 server_default='0'))
    op.add_column('signature_exports', sa.Column('lease_until',
                                                 campaign.models.base.UTCDateTime(timezone=True),
                                                 nullable=True))
    # An export running now was taken without a lease, most likely by a worker this deploy
    # stopped: give it the default lease (EXPORT_LEASE_SECONDS) from now, so the reach job takes
    # it back if nothing finishes it, instead of leaving it running for ever.
    exports = sa.table('signature_exports', sa.column('status', sa.String),
                       sa.column('lease_until', campaign.models.base.UTCDateTime(timezone=True)))
    op.execute(exports.update().where(exports.c.status == 'running')
               .values(lease_until=datetime.now(UTC) + timedelta(seconds=3600)))


def downgrade():
    op.drop_column('signature_exports', 'lease_until')
    op.drop_column('signature_exports', 'attempts')
