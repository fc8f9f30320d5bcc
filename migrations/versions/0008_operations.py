"""Operations and surge: the outbox's reason category (issue 11's email status page).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 13:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    # A plain add_column (no batch rebuild on SQLite): old code that does not know it still works.
    op.add_column('outbound_emails', sa.Column('reason', sa.String(length=32), server_default='', nullable=False))


def downgrade():
    # Plain DROP COLUMN (SQLite 3.35+): no rebuild of a table that deliveries reference.
    op.drop_column('outbound_emails', 'reason')
