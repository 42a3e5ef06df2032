"""The conductor's schema before schema versions.

Databases without an ``alembic_version`` table but with these tables are
stamped at this revision, then upgraded.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

_json = sa.JSON(none_as_null=True)


def upgrade():
    op.create_table(
        'batches',
        sa.Column('id', sa.String(64), primary_key=True),
        sa.Column('created_at', sa.Double, nullable=False),
        sa.Column('updated_at', sa.Double, nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('total', sa.Integer, nullable=False),
        sa.Column('options', _json),
        sa.Column('start_notified', sa.Boolean, nullable=False),
        sa.Column('end_notified', sa.Boolean, nullable=False),
    )
    op.create_index('ix_batches_state_created', 'batches',
                    ['state', 'created_at'])
    op.create_index('ix_batches_end_notified', 'batches',
                    ['end_notified', 'created_at'])
    op.create_table(
        'items',
        sa.Column('batch_id', sa.String(64),
                  sa.ForeignKey('batches.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('idx', sa.Integer, primary_key=True, autoincrement=False),
        sa.Column('url', sa.Text, nullable=False),
        sa.Column('key', sa.Text),
        sa.Column('name', sa.Text),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('attempts', sa.Integer, nullable=False),
        sa.Column('server', sa.String(255)),
        sa.Column('spool_id', sa.String(255)),
        sa.Column('lease_until', sa.Double),
        sa.Column('started_at', sa.Double),
        sa.Column('next_attempt_at', sa.Double, nullable=False),
        sa.Column('result', _json),
        sa.Column('error', _json),
        sa.Column('notified', sa.Boolean, nullable=False),
        sa.Column('updated_at', sa.Double, nullable=False),
    )
    op.create_index('ix_items_batch_state', 'items',
                    ['batch_id', 'state', 'idx'])
    op.create_index('ix_items_state_lease', 'items', ['state', 'lease_until'])
    op.create_index('ix_items_unnotified', 'items',
                    ['notified', 'batch_id', 'idx'])
