"""The batch store scenarios of the unit tests, on a real PostgreSQL.

Each test gets its own schema (``search_path`` set through the URL), dropped
afterwards. The server is ``$RPCMQ_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``. If it is unreachable the
tests are skipped, or fail when ``CI=true``.
"""


import pytest

# The scenarios, collected again here with the store_url fixture below.
from rpcmq.tests.unit.conductor.test_chunks import *  # noqa: F403
from rpcmq.tests.unit.conductor.test_db import *  # noqa: F403

# SQLite's own: not collected here (a skip would hide a missing service).
del test_sqlite_file_uses_wal  # noqa: F821


@pytest.fixture
def store_url(postgres_schema_url):
    return postgres_schema_url[0]


def test_store_lives_in_its_own_schema(store, store_url):
    assert store.is_postgres
    with store.engine.connect() as conn:
        schema = conn.exec_driver_sql('SELECT current_schema()').scalar()
    assert schema.startswith('rpcmq_test_') and schema in store_url
