"""The batch store scenarios of the unit tests, on a real PostgreSQL.

Each test gets its own schema (``search_path`` set through the URL), dropped
afterwards. The server is ``$RPCMQ_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``. If it is unreachable the
tests are skipped, or fail when ``CI=true``.
"""

import os
import uuid

import pytest
import sqlalchemy as sa

from rpcmq.conductor.models import make_engine

# The scenarios, collected again here with the store_url fixture below.
from rpcmq.tests.unit.conductor.test_db import *  # noqa: F403

POSTGRES_URL = os.environ.get('RPCMQ_TEST_POSTGRES_URL',
                              'postgresql://postgres@127.0.0.1:5432/test')


@pytest.fixture(scope='module')
def postgres():
    engine, _ = make_engine(sa.make_url(POSTGRES_URL).update_query_dict(
        {'connect_timeout': '3'}))
    engine = engine.execution_options(isolation_level='AUTOCOMMIT')
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql('SELECT 1')
    except (sa.exc.DBAPIError, ImportError) as exc:
        engine.dispose()
        why = str(getattr(exc, 'orig', exc)).strip().splitlines()[0]
        where = sa.make_url(POSTGRES_URL).render_as_string()
        reason = (f'PostgreSQL at {where} is unreachable ({why}); '
                  'start it or set RPCMQ_TEST_POSTGRES_URL')
        if os.environ.get('CI') == 'true':
            pytest.fail(reason)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def store_url(postgres):
    schema = f'rpcmq_test_{uuid.uuid4().hex[:12]}'
    with postgres.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA {schema}')
    url = sa.make_url(POSTGRES_URL).update_query_dict(
        {'options': f'-csearch_path={schema}'})
    yield url.render_as_string(hide_password=False)
    with postgres.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA {schema} CASCADE')


def test_store_lives_in_its_own_schema(store, store_url):
    assert store.is_postgres
    with store.engine.connect() as conn:
        schema = conn.exec_driver_sql('SELECT current_schema()').scalar()
    assert schema.startswith('rpcmq_test_') and schema in store_url
