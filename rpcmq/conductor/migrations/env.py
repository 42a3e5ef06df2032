"""Alembic environment of the conductor's database.

Run through ``rpcmq.conductor.migrate`` (``rpcmq-conductor --upgrade-db``
or at start-up), which hands over a connection already in a transaction
and holding the migration lock; ``alembic`` on the command line works too
with ``-x url=...``.
"""

import sqlalchemy as sa
from alembic import context

from rpcmq.conductor.schema import metadata

config = context.config
connection = config.attributes.get('connection')


def run(conn):
    context.configure(connection=conn, target_metadata=metadata,
                      render_as_batch=conn.dialect.name == 'sqlite')
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get('url') or \
        config.get_main_option('sqlalchemy.url')
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        run(conn)
