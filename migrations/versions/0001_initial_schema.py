"""Initial schema: campaigns, petitions, targets, signatures (encrypted), the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('campaigns',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slug', sa.String(length=80), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('organization', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('sender_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('slug', name=op.f('uq_campaigns_slug'))
    )
    op.create_table('targets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('country', sa.String(length=8), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('group_name', sa.String(length=80), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_targets'))
    )
    with op.batch_alter_table('targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_targets_country'), ['country'], unique=False)
        batch_op.create_index(batch_op.f('ix_targets_group_name'), ['group_name'], unique=False)

    op.create_table('petitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slug', sa.String(length=120), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('body_markdown', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('letter', sa.Text(), nullable=False),
    sa.Column('goal', sa.Integer(), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('mailing_policy', sa.String(length=16), nullable=False),
    sa.Column('is_sensitive', sa.Boolean(), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("mailing_policy IN ('letters', 'deliveries', 'both', 'none')", name=op.f('ck_petitions_mailing_policy')),
    sa.CheckConstraint("status IN ('draft', 'in_review', 'published', 'closed')", name=op.f('ck_petitions_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_petitions_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_petitions')),
    sa.UniqueConstraint('slug', name=op.f('uq_petitions_slug'))
    )
    with op.batch_alter_table('petitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_petitions_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('petition_counters',
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('confirmed', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_counters_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'shard', name=op.f('pk_petition_counters'))
    )
    op.create_table('petition_targets',
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_targets_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_petition_targets_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'target_id', name=op.f('pk_petition_targets'))
    )
    with op.batch_alter_table('petition_targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_petition_targets_target_id'), ['target_id'], unique=False)

    op.create_table('signatures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('email_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('postcode_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('email_index', sa.String(length=64), nullable=False),
    sa.Column('country', sa.String(length=8), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('consent_updates', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('ip_hash', sa.String(length=64), nullable=True),
    sa.Column('network_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'confirmed', 'held', 'invalidated')", name=op.f('ck_signatures_status')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_signatures_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signatures')),
    sa.UniqueConstraint('petition_id', 'email_index', name=op.f('uq_signatures_petition_id_email_index'))
    )
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signatures_email_index'), ['email_index'], unique=False)
        batch_op.create_index('ix_signatures_petition_status_created', ['petition_id', 'status', 'created_at'], unique=False)

    op.create_table('outbound_emails',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('signature_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('recipient_index', sa.String(length=64), nullable=True),
    sa.Column('from_public_form', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')", name=op.f('ck_outbound_emails_status')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_outbound_emails_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], name=op.f('fk_outbound_emails_signature_id_signatures'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_outbound_emails_target_id_targets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_emails')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbound_emails_idempotency_key'))
    )
    with op.batch_alter_table('outbound_emails', schema=None) as batch_op:
        batch_op.create_index('ix_outbound_emails_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbound_emails_petition_id'), ['petition_id'], unique=False)
        batch_op.create_index('ix_outbound_emails_recipient_created', ['recipient_index', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbound_emails_signature_id'), ['signature_id'], unique=False)



def downgrade():
    with op.batch_alter_table('outbound_emails', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbound_emails_signature_id'))
        batch_op.drop_index('ix_outbound_emails_recipient_created')
        batch_op.drop_index(batch_op.f('ix_outbound_emails_petition_id'))
        batch_op.drop_index('ix_outbound_emails_due')

    op.drop_table('outbound_emails')
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_index('ix_signatures_petition_status_created')
        batch_op.drop_index(batch_op.f('ix_signatures_email_index'))

    op.drop_table('signatures')
    with op.batch_alter_table('petition_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_petition_targets_target_id'))

    op.drop_table('petition_targets')
    op.drop_table('petition_counters')
    with op.batch_alter_table('petitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_petitions_campaign_id'))

    op.drop_table('petitions')
    with op.batch_alter_table('targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_targets_group_name'))
        batch_op.drop_index(batch_op.f('ix_targets_country'))

    op.drop_table('targets')
    op.drop_table('campaigns')
