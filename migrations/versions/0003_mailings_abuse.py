"""Mailings to officials (routing, letters, deliveries, responses), abuse resistance (holds,
trending alerts, suppressions, kill switches) and the signers' consent boxes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:48:42.377899

"""
from alembic import op
import sqlalchemy as sa

import campaign.models.base


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('letter_quotas',
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('window_start', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_letter_quotas_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('target_id', 'window_start', name=op.f('pk_letter_quotas'))
    )
    op.create_table('site_settings',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['updated_by_id'], ['users.id'], name=op.f('fk_site_settings_updated_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_site_settings'))
    )
    op.create_table('suppressions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email_index', sa.String(length=64), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("reason IN ('unsubscribe', 'bounce', 'complaint')", name=op.f('ck_suppressions_reason')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_suppressions_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions'))
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.create_index('ix_suppressions_email_index_campaign', ['email_index', 'campaign_id'], unique=False)

    op.create_table('target_countries',
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('country', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_target_countries_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('target_id', 'country', name=op.f('pk_target_countries'))
    )
    with op.batch_alter_table('target_countries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_target_countries_country'), ['country'], unique=False)

    op.create_table('petition_mailings',
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('routing_fallback', sa.String(length=16), nullable=False),
    sa.Column('updated_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("routing_fallback IN ('all', 'defaults', 'nobody')", name=op.f('ck_petition_mailings_routing_fallback')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_mailings_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', name=op.f('pk_petition_mailings'))
    )
    op.create_table('target_mailings',
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cadence', sa.String(length=16), nullable=False),
    sa.Column('every_n', sa.Integer(), nullable=False),
    sa.Column('next_run_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('failing_since', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failure_cursor', sa.BigInteger(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('reached', sa.Integer(), nullable=False),
    sa.Column('reached_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("cadence IN ('every_n', 'daily', 'weekly', 'final')", name=op.f('ck_target_mailings_cadence')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_target_mailings_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_target_mailings_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'target_id', name=op.f('pk_target_mailings'))
    )
    with op.batch_alter_table('target_mailings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_target_mailings_target_id'), ['target_id'], unique=False)

    op.create_table('target_responses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('responded_on', sa.Date(), nullable=False),
    sa.Column('stance', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('link', sa.String(length=500), nullable=False),
    sa.Column('recorded_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('notify_pending', sa.Boolean(), nullable=False),
    sa.Column('notify_cursor', sa.BigInteger(), nullable=False),
    sa.Column('notified', sa.Integer(), nullable=False),
    sa.CheckConstraint("stance IN ('supports', 'partly', 'noncommittal', 'opposes', 'declined')", name=op.f('ck_target_responses_stance')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_target_responses_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_target_responses_recorded_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_target_responses_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_target_responses'))
    )
    with op.batch_alter_table('target_responses', schema=None) as batch_op:
        batch_op.create_index('ix_target_responses_petition_target', ['petition_id', 'target_id'], unique=False)

    op.create_table('trending_alerts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=255), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('window_start', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('ip', 'domain')", name=op.f('ck_trending_alerts_kind')),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_trending_alerts_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trending_alerts')),
    sa.UniqueConstraint('petition_id', 'kind', 'subject', 'window_start', name=op.f('uq_trending_alerts_petition_id_kind_subject_window_start'))
    )
    with op.batch_alter_table('trending_alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trending_alerts_petition_id'), ['petition_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('new_count', sa.Integer(), nullable=False),
    sa.Column('total_count', sa.Integer(), nullable=False),
    sa.Column('cutoff', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('email_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('request_key', sa.String(length=120), nullable=True),
    sa.Column('requested_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('batch', 'final', 'now')", name=op.f('ck_deliveries_kind')),
    sa.ForeignKeyConstraint(['email_id'], ['outbound_emails.id'], name=op.f('fk_deliveries_email_id_outbound_emails'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_deliveries_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], name=op.f('fk_deliveries_requested_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_deliveries_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('email_id', name=op.f('uq_deliveries_email_id')),
    sa.UniqueConstraint('request_key', name=op.f('uq_deliveries_request_key'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_petition_target_created', ['petition_id', 'target_id', 'created_at'], unique=False)

    op.create_table('routed_signatures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('petition_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('signature_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('routed_at', campaign.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('letter_email_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("via IN ('letter', 'overflow', 'no_address', 'batch')", name=op.f('ck_routed_signatures_via')),
    sa.ForeignKeyConstraint(['batch_id'], ['deliveries.id'], name=op.f('fk_routed_signatures_batch_id_deliveries'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['letter_email_id'], ['outbound_emails.id'], name=op.f('fk_routed_signatures_letter_email_id_outbound_emails'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_routed_signatures_petition_id_petitions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], name=op.f('fk_routed_signatures_signature_id_signatures'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_routed_signatures_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_routed_signatures')),
    sa.UniqueConstraint('signature_id', 'target_id', name=op.f('uq_routed_signatures_signature_id_target_id'))
    )
    with op.batch_alter_table('routed_signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_routed_signatures_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index('ix_routed_signatures_pending', ['petition_id', 'target_id', 'batch_id'], unique=False)

    # Plain ADD COLUMN: a batch rebuild on SQLite would drop and recreate the signatures table.
    for column in (
        sa.Column('email_domain_hash', sa.String(length=64), nullable=True),
        sa.Column('hold_reasons', sa.String(length=200), nullable=True),
        sa.Column('held_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('released_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('anonymized_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('consent_name_to_targets', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('consent_reply_to', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('consent_public_name', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('routed_at', campaign.models.base.UTCDateTime(timezone=True), nullable=True),
    ):
        op.add_column('signatures', column)
    op.create_index('ix_signatures_petition_domain_created', 'signatures', ['petition_id', 'email_domain_hash', 'created_at'], unique=False)
    op.create_index('ix_signatures_petition_ip_created', 'signatures', ['petition_id', 'ip_hash', 'created_at'], unique=False)
    op.create_index('ix_signatures_petition_network', 'signatures', ['petition_id', 'network_hash'], unique=False)
    op.create_index('ix_signatures_status_routed', 'signatures', ['status', 'routed_at'], unique=False)



def downgrade():
    for index in ('ix_signatures_status_routed', 'ix_signatures_petition_network',
                  'ix_signatures_petition_ip_created', 'ix_signatures_petition_domain_created'):
        op.drop_index(index, table_name='signatures')
    for name in ('routed_at', 'consent_public_name', 'consent_reply_to', 'consent_name_to_targets',
                 'anonymized_at', 'released_at', 'held_at', 'hold_reasons', 'email_domain_hash'):
        op.drop_column('signatures', name)

    with op.batch_alter_table('routed_signatures', schema=None) as batch_op:
        batch_op.drop_index('ix_routed_signatures_pending')
        batch_op.drop_index(batch_op.f('ix_routed_signatures_batch_id'))

    op.drop_table('routed_signatures')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_petition_target_created')

    op.drop_table('deliveries')
    with op.batch_alter_table('trending_alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trending_alerts_petition_id'))

    op.drop_table('trending_alerts')
    with op.batch_alter_table('target_responses', schema=None) as batch_op:
        batch_op.drop_index('ix_target_responses_petition_target')

    op.drop_table('target_responses')
    with op.batch_alter_table('target_mailings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_target_mailings_target_id'))

    op.drop_table('target_mailings')
    op.drop_table('petition_mailings')
    with op.batch_alter_table('target_countries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_target_countries_country'))

    op.drop_table('target_countries')
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_email_index_campaign')

    op.drop_table('suppressions')
    op.drop_table('site_settings')
    op.drop_table('letter_quotas')
