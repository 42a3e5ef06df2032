"""Functional tests talk to the real brokers on this machine.

Where a broker is down the tests that need it fail when CI=true (CI must
have it) and are skipped with the reason otherwise.
"""

import os
import socket
import uuid

import pytest
import sqlalchemy as sa

# The 3-node RabbitMQ cluster of the cluster tests, one per session.
from rpcmq.tests.functional.cluster import rabbit_cluster  # noqa: F401

RABBIT_URL = os.environ.get('RPCMQ_RABBIT_URL',
                            'rabbit://guest:guest@127.0.0.1:5672/')
REDIS_URL = os.environ.get('RPCMQ_REDIS_URL', 'redis://127.0.0.1:6379/0')
POSTGRES_URL = os.environ.get('RPCMQ_TEST_POSTGRES_URL',
                              'postgresql://postgres@127.0.0.1:5432/test')

SERVICES = {'rabbit': ('127.0.0.1', 5672), 'redis': ('127.0.0.1', 6379),
            'postgres': ('127.0.0.1', 5432), 'mqtt': ('127.0.0.1', 1883)}


def require(service):
    """Fail (CI) or skip (elsewhere) unless ``service`` accepts connections."""
    host, port = SERVICES[service]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        reason = '%s is not reachable at %s:%d (%s)' % (service, host, port,
                                                        exc)
        if os.environ.get('CI') == 'true':
            pytest.fail('CI needs %s' % reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(params=['rabbit', 'redis'])
def url(request):
    require(request.param)
    return RABBIT_URL if request.param == 'rabbit' else REDIS_URL


@pytest.fixture
def rabbit_url():
    require('rabbit')
    return RABBIT_URL


@pytest.fixture(scope='module')
def postgres_admin():
    """An AUTOCOMMIT engine on the test PostgreSQL server."""
    from rpcmq.conductor.models import make_engine
    require('postgres')
    engine, _ = make_engine(sa.make_url(POSTGRES_URL).update_query_dict(
        {'connect_timeout': '3'}))
    engine = engine.execution_options(isolation_level='AUTOCOMMIT')
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql('SELECT 1')
    except (sa.exc.DBAPIError, ImportError) as exc:
        engine.dispose()
        reason = 'PostgreSQL at %s is unusable: %s' % (
            sa.make_url(POSTGRES_URL).render_as_string(), exc)
        if os.environ.get('CI') == 'true':
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_schema_url(postgres_admin):
    """(URL, schema): a fresh schema, found through ``search_path``."""
    schema = 'rpcmq_test_%s' % uuid.uuid4().hex[:12]
    with postgres_admin.connect() as conn:
        conn.exec_driver_sql('CREATE SCHEMA %s' % schema)
    url = sa.make_url(POSTGRES_URL).update_query_dict(
        {'options': '-csearch_path=%s' % schema})
    yield url.render_as_string(hide_password=False), schema
    with postgres_admin.connect() as conn:
        conn.exec_driver_sql('DROP SCHEMA %s CASCADE' % schema)
