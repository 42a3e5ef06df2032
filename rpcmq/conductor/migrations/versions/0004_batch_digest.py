"""batches.digest: a batch id submitted again must bring the same items.

The digest (SHA-256 of the validated items) tells a retried submit, which
adds nothing, from a different batch under an existing id, which is
refused. Batches from before this revision have none and are taken as
they were.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('batches') as batch:
        batch.add_column(sa.Column('digest', sa.String(64)))
