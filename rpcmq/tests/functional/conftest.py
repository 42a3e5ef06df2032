"""Functional tests talk to the real brokers on this machine.

Where a broker is down the tests that need it fail when CI=true (CI must
have it) and are skipped with the reason otherwise.
"""

import os
import socket

import pytest

RABBIT_URL = os.environ.get('RPCMQ_RABBIT_URL',
                            'rabbit://guest:guest@127.0.0.1:5672/')
REDIS_URL = os.environ.get('RPCMQ_REDIS_URL', 'redis://127.0.0.1:6379/0')

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
