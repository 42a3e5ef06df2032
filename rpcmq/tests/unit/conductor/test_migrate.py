"""The conductor's schema under version control: a new database, one made
before schema versions existed, and a conductor refusing an old schema.

Run on SQLite here and on PostgreSQL by
``functional/test_conductor_schema_postgres.py`` (same scenarios, its own
``store_url``)."""

import pytest
import sqlalchemy as sa

from rpcmq.conductor import migrate, models
from rpcmq.conductor.db import BatchStore
from rpcmq.exceptions import ConfigError


@pytest.fixture
def store_url(tmp_path):
    return f'sqlite:///{tmp_path}/state/conductor.sqlite'


def old_schema():
    """The tables exactly as rpcmq made them before schema versions
    (metadata.create_all of that release)."""
    meta = sa.MetaData()
    json = sa.JSON(none_as_null=True)
    sa.Table('batches', meta,
             sa.Column('id', sa.String(64), primary_key=True),
             sa.Column('created_at', sa.Double, nullable=False),
             sa.Column('updated_at', sa.Double, nullable=False),
             sa.Column('state', sa.String(16), nullable=False),
             sa.Column('total', sa.Integer, nullable=False),
             sa.Column('options', json),
             sa.Column('start_notified', sa.Boolean, nullable=False),
             sa.Column('end_notified', sa.Boolean, nullable=False),
             sa.Index('ix_batches_state_created', 'state', 'created_at'),
             sa.Index('ix_batches_end_notified', 'end_notified',
                      'created_at'))
    sa.Table('items', meta,
             sa.Column('batch_id', sa.String(64),
                       sa.ForeignKey('batches.id', ondelete='CASCADE'),
                       primary_key=True),
             sa.Column('idx', sa.Integer, primary_key=True,
                       autoincrement=False),
             sa.Column('url', sa.Text, nullable=False),
             sa.Column('key', sa.Text), sa.Column('name', sa.Text),
             sa.Column('state', sa.String(16), nullable=False),
             sa.Column('attempts', sa.Integer, nullable=False),
             sa.Column('server', sa.String(255)),
             sa.Column('spool_id', sa.String(255)),
             sa.Column('lease_until', sa.Double),
             sa.Column('started_at', sa.Double),
             sa.Column('next_attempt_at', sa.Double, nullable=False),
             sa.Column('result', json), sa.Column('error', json),
             sa.Column('notified', sa.Boolean, nullable=False),
             sa.Column('updated_at', sa.Double, nullable=False),
             sa.Index('ix_items_batch_state', 'batch_id', 'state', 'idx'),
             sa.Index('ix_items_state_lease', 'state', 'lease_until'),
             sa.Index('ix_items_unnotified', 'notified', 'batch_id', 'idx'))
    return meta


def test_a_new_database_is_created_at_the_newest_revision(store_url):
    store = BatchStore(store_url)
    try:
        assert store.upgrade() == (None, migrate.head())
        assert store.upgrade() == (migrate.head(), migrate.head())
        store.require_current()
        batch_id, _ = store.submit(['http://a.test/1.jpg'])
        assert store.get_item(batch_id, 0).retry_base == 0
    finally:
        store.close()


def test_a_database_from_before_schema_versions_is_upgraded_in_place(
        store_url):
    store = BatchStore(store_url)
    try:
        meta = old_schema()
        meta.create_all(store.engine)
        with store.engine.begin() as conn:
            conn.execute(meta.tables['batches'].insert().values(
                id='old', created_at=1.0, updated_at=2.0, state='done',
                total=1, options=None, start_notified=True,
                end_notified=True))
            conn.execute(meta.tables['items'].insert().values(
                batch_id='old', idx=0, url='http://a.test/0.jpg',
                state='failed', attempts=4, next_attempt_at=1.0,
                error={'type': 'DownloadFailed', 'message': 'gone'},
                notified=True, updated_at=2.0))
        with pytest.raises(ConfigError, match='--upgrade-db'):
            store.require_current()

        assert store.upgrade() == (migrate.BASELINE, migrate.head())
        # Its indexes are those a new database gets.
        for table in (models.items, models.batches):
            found = {ix['name']: ix['column_names'] for ix in
                     sa.inspect(store.engine).get_indexes(table.name)}
            assert found == {ix.name: [c.name for c in ix.columns]
                             for ix in table.indexes}
        # The batch's counts were made from its items.
        assert store.status('old')['totals'] == {
            'total': 1, 'pending': 0, 'running': 0, 'done': 0, 'failed': 1,
            'cancelled': 0}
        item = store.get_item('old', 0)
        assert (item.state, item.attempts, item.retry_base) == \
            ('failed', 4, 0)
        assert item.error['type'] == 'DownloadFailed'
        # The old batch can be retried, and its next attempt is the 5th.
        assert store.retry_failed('old') == 1
        [again] = store.claim(10)
        assert (again.attempts, again.tries) == (5, 1)
    finally:
        store.close()


def test_a_conductor_that_may_not_upgrade_names_the_command(store_url):
    store = BatchStore(store_url)
    try:
        with pytest.raises(ConfigError) as refused:
            store.require_current()
        text = str(refused.value)
        assert 'rpcmq-conductor --config-file ... --upgrade-db' in text
        assert 'needs %s' % migrate.head() in text
    finally:
        store.close()
