"""Organizer reach: supporter updates and their recipients, export files, soft bounce counts,
and the signatures' indexes the dashboard's aggregates read (by country and by source).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 13:20:00

"""
from alembic import op
import sqlalchemy as sa

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('signature_exports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('request', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name=op.f('ck_signature_exports_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_signature_exports_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_signature_exports_created_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signature_exports'))
    )
    op.create_index(op.f('ix_signature_exports_campaign_id'), 'signature_exports', ['campaign_id'], unique=False)
    op.create_table('soft_bounces',
    sa.Column('email_index', sa.String(length=64), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('first_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('email_index', name=op.f('pk_soft_bounces'))
    )
    op.create_table('supporter_updates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('body_markdown', sa.Text(), nullable=False),
    sa.Column('countries', sa.String(length=1000), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('send_after', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('form_key', sa.String(length=64), nullable=True),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('progress_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('draft', 'scheduled', 'sending', 'paused', 'cancelled', 'sent')", name=op.f('ck_supporter_updates_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_supporter_updates_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_supporter_updates_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_supporter_updates_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_supporter_updates')),
    sa.UniqueConstraint('form_key', name=op.f('uq_supporter_updates_form_key'))
    )
    op.create_index(op.f('ix_supporter_updates_campaign_id'), 'supporter_updates', ['campaign_id'], unique=False)
    op.create_index('ix_supporter_updates_status_send_after', 'supporter_updates', ['status', 'send_after'], unique=False)
    op.create_table('update_recipients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('update_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('signature_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('email_index', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_until', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.String(length=300), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')", name=op.f('ck_update_recipients_status')),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], name=op.f('fk_update_recipients_signature_id_signatures'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['update_id'], ['supporter_updates.id'], name=op.f('fk_update_recipients_update_id_supporter_updates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_recipients')),
    sa.UniqueConstraint('update_id', 'email_index', name=op.f('uq_update_recipients_update_id_email_index'))
    )
    op.create_index(op.f('ix_update_recipients_email_index'), 'update_recipients', ['email_index'], unique=False)
    op.create_index('ix_update_recipients_update_status', 'update_recipients', ['update_id', 'status'], unique=False)
    op.create_index('ix_signatures_petition_status_country', 'signatures', ['petition_id', 'status', 'country'], unique=False)
    op.create_index('ix_signatures_petition_status_source', 'signatures', ['petition_id', 'status', 'source'], unique=False)


def downgrade():
    op.drop_index('ix_signatures_petition_status_source', table_name='signatures')
    op.drop_index('ix_signatures_petition_status_country', table_name='signatures')
    op.drop_index('ix_update_recipients_update_status', table_name='update_recipients')
    op.drop_index(op.f('ix_update_recipients_email_index'), table_name='update_recipients')
    op.drop_table('update_recipients')
    op.drop_index('ix_supporter_updates_status_send_after', table_name='supporter_updates')
    op.drop_index(op.f('ix_supporter_updates_campaign_id'), table_name='supporter_updates')
    op.drop_table('supporter_updates')
    op.drop_table('soft_bounces')
    op.drop_index(op.f('ix_signature_exports_campaign_id'), table_name='signature_exports')
    op.drop_table('signature_exports')
