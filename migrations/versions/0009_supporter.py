"""The supporter's experience: reminders, referral codes, petition translations, recent signers.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 13:20:00

"""
from alembic import op
import sqlalchemy as sa

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'petition_translations',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('title', sa.String(length=300), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('body_markdown', sa.Text(), nullable=False),
        sa.Column('body_html', sa.Text(), nullable=False),
        sa.Column('updated_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'],
                                name=op.f('fk_petition_translations_petition_id_petitions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_petition_translations')),
        sa.UniqueConstraint('petition_id', 'language', name=op.f('uq_petition_translations_petition_id_language')),
    )
    op.create_index(op.f('ix_petition_translations_petition_id'), 'petition_translations', ['petition_id'],
                    unique=False)
    # Plain ADD COLUMN: a batch rebuild on SQLite would drop and recreate tables others reference.
    op.add_column('petitions', sa.Column('show_recent_signers', sa.Boolean(), nullable=False,
                                         server_default=sa.true()))
    for column in (
        sa.Column('referral_code', sa.String(length=16), nullable=True),
        sa.Column('referred_by', sa.String(length=16), nullable=True),
        sa.Column('reminded_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    ):
        op.add_column('signatures', column)
    op.create_index(op.f('ix_signatures_referral_code'), 'signatures', ['referral_code'], unique=False)
    public = sa.text("consent_public_name AND status = 'confirmed'")
    op.create_index('ix_signatures_recent_public', 'signatures', ['petition_id', 'confirmed_at'], unique=False,
                    postgresql_where=public, sqlite_where=public)


def downgrade():
    op.drop_index('ix_signatures_recent_public', table_name='signatures')
    op.drop_index(op.f('ix_signatures_referral_code'), table_name='signatures')
    for name in ('reminded_at', 'referred_by', 'referral_code'):
        op.drop_column('signatures', name)
    op.drop_column('petitions', 'show_recent_signers')
    op.drop_index(op.f('ix_petition_translations_petition_id'), table_name='petition_translations')
    op.drop_table('petition_translations')
