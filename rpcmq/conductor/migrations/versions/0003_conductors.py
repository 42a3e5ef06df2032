"""conductors table and items.owner: several conductors on one database.

Each running conductor has a row with its heartbeat; a claimed item names
the conductor running it, so a dead conductor's items are taken back by a
live peer (or its own next start) without touching anyone else's.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'conductors',
        sa.Column('id', sa.String(64), primary_key=True),
        sa.Column('host', sa.String(255), nullable=False),
        sa.Column('pid', sa.Integer, nullable=False),
        sa.Column('started_at', sa.Double, nullable=False),
        sa.Column('heartbeat_at', sa.Double, nullable=False),
    )
    with op.batch_alter_table('items') as batch:
        batch.add_column(sa.Column('owner', sa.String(64)))
    op.create_index('ix_items_owner_state', 'items', ['owner', 'state'])
