"""The RPC scenarios on kombu's in-process memory:// transport."""

import pytest

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.server import InProcessServer
from rpcmq.tests.scenarios.rpc import *  # noqa: F401,F403


@pytest.fixture
def url():
    return 'memory://'


def test_in_process_fixture_serves_user_endpoints():
    class Doubler:
        def double(self, ctxt, x):
            return 2 * x

    with InProcessServer([Doubler(), DiagEndpoint(unsafe=True)]) as srv:
        assert srv.client.call({}, 'double', x=21) == 42
        assert srv.client.call({}, 'echo', x='hi') == 'hi'
