"""Per-state item counts on each batch row.

status, list and the end-of-batch check read a batch's totals from its
row instead of counting its items: O(1) at any batch size. Every item
transition updates them in its own transaction.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

STATES = ('pending', 'running', 'done', 'failed', 'cancelled')


def upgrade():
    with op.batch_alter_table('batches') as batch:
        for state in STATES:
            batch.add_column(sa.Column('n_' + state, sa.Integer,
                                       nullable=False, server_default='0'))
    for state in STATES:
        op.execute(
            "UPDATE batches SET n_%s = (SELECT count(*) FROM items WHERE "
            "items.batch_id = batches.id AND items.state = '%s')"
            % (state, state))
