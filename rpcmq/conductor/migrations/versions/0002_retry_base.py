"""items.retry_base: retrying no longer resets attempts.

``attempts`` is the fencing token of an item's attempts and must never go
back; ``retry_base`` is what ``attempts`` was when the user last retried
the item, so the retry budget counts ``attempts - retry_base``.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('items') as batch:
        batch.add_column(sa.Column('retry_base', sa.Integer, nullable=False,
                                   server_default='0'))
