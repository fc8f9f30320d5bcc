"""Organizers: accounts, campaign members, invitations, sign-in attempt counters, the audit log,
paper signatures, campaigns' own targets; petitions' closing date and review fields; signatures'
invalidation.

Columns are added to petitions and signatures with plain ALTER TABLE ADD COLUMN (no foreign
keys): on SQLite, anything that makes Alembic's batch mode recreate those tables would drop
them first, and ON DELETE CASCADE would take the signatures with them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

import campaign.models.base

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = campaign.models.base.UTCDateTime(timezone=True)


def upgrade():
    op.create_table('users',
    sa.Column('id', ID, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('session_token', sa.String(length=64), nullable=False),
    sa.Column('totp_secret_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('totp_required', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('approved_at', UTC, nullable=True),
    sa.Column('last_login_at', UTC, nullable=True),
    sa.Column('password_changed_at', UTC, nullable=True),
    sa.CheckConstraint("status IN ('unverified', 'pending', 'active', 'disabled')", name=op.f('ck_users_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('attempt_counters',
    sa.Column('id', ID, nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('window_start', UTC, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempt_counters')),
    sa.UniqueConstraint('key', name=op.f('uq_attempt_counters_key'))
    )
    op.create_table('campaign_members',
    sa.Column('campaign_id', ID, nullable=False),
    sa.Column('user_id', ID, nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.CheckConstraint("role IN ('owner', 'organizer')", name=op.f('ck_campaign_members_role')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_members_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_campaign_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'user_id', name=op.f('pk_campaign_members'))
    )
    with op.batch_alter_table('campaign_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_members_user_id'), ['user_id'], unique=False)

    op.create_table('invitations',
    sa.Column('id', ID, nullable=False),
    sa.Column('campaign_id', ID, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('invited_by_id', ID, nullable=True),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('accepted_at', UTC, nullable=True),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'revoked')", name=op.f('ck_invitations_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_invitations_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'], name=op.f('fk_invitations_invited_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations'))
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invitations_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('audit_events',
    sa.Column('id', ID, nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('actor_id', ID, nullable=True),
    sa.Column('actor_email', sa.String(length=320), nullable=False),
    sa.Column('campaign_id', ID, nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.BigInteger(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_audit_events_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_audit_events_campaign_id_campaigns'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_campaign_created', ['campaign_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_created_at'), ['created_at'], unique=False)

    op.create_table('offline_signatures',
    sa.Column('id', ID, nullable=False),
    sa.Column('petition_id', ID, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_by_id', ID, nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_offline_signatures_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_offline_signatures_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offline_signatures'))
    )
    with op.batch_alter_table('offline_signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offline_signatures_petition_id'), ['petition_id'], unique=False)

    op.create_table('campaign_targets',
    sa.Column('target_id', ID, nullable=False),
    sa.Column('campaign_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_targets_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_campaign_targets_target_id_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('target_id', name=op.f('pk_campaign_targets'))
    )
    with op.batch_alter_table('campaign_targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_targets_campaign_id'), ['campaign_id'], unique=False)

    # Plain ADD COLUMN, never a table rebuild (see the module's docstring).
    for name, column_type in (('closes_at', UTC), ('updated_at', UTC), ('submitted_at', UTC),
                              ('review_note', sa.Text())):
        op.add_column('petitions', sa.Column(name, column_type, nullable=True))
    for name, column_type in (('invalidated_at', UTC), ('invalidation_reason', sa.Text())):
        op.add_column('signatures', sa.Column(name, column_type, nullable=True))


def downgrade():
    # SQLite (3.35+) drops a column in place when no index or constraint uses it.
    for name in ('invalidation_reason', 'invalidated_at'):
        op.drop_column('signatures', name)
    for name in ('review_note', 'submitted_at', 'updated_at', 'closes_at'):
        op.drop_column('petitions', name)

    with op.batch_alter_table('campaign_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_targets_campaign_id'))
    op.drop_table('campaign_targets')
    with op.batch_alter_table('offline_signatures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offline_signatures_petition_id'))
    op.drop_table('offline_signatures')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_created_at'))
        batch_op.drop_index('ix_audit_events_campaign_created')
    op.drop_table('audit_events')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invitations_campaign_id'))
    op.drop_table('invitations')
    with op.batch_alter_table('campaign_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_members_user_id'))
    op.drop_table('campaign_members')
    op.drop_table('attempt_counters')
    op.drop_table('users')
