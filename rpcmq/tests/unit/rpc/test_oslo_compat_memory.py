"""An rpcmq client and server both in oslo_compat mode, on memory://:
requests travel in oslo.messaging's envelope, and what rpcmq adds to its
own wire (signatures) still holds."""

import pytest

import rpcmq
from rpcmq.testing.server import make_conf

KEY = 'k1:oslo-compat-signing-secret-0123456789'


class Calc:
    def add(self, ctxt, a, b):
        return a + b

    def whoami(self, ctxt):
        return ctxt.get('user')


@pytest.fixture(params=[False, True], ids=['unsigned', 'signed'])
def rpc(request):
    # memory:// keeps its exchanges for the process: one of our own
    options = {'oslo_compat': True, 'control_exchange': 'oslo_memory_test'}
    if request.param:
        options.update({'security.signing_keys': [KEY],
                        'security.require_signed': True})
    transport = rpcmq.get_transport(make_conf(**options), url='memory://')
    server = rpcmq.get_rpc_server(transport, rpcmq.Target(topic='oslo_calc'),
                                  [Calc()])
    server.start()
    yield rpcmq.RPCClient(transport, rpcmq.Target(topic='oslo_calc'),
                          timeout=10)
    server.stop()
    server.wait(5)
    transport.cleanup()


def test_calls_in_the_oslo_envelope_are_answered(rpc):
    """Signed: the server signed the reply it sent, in oslo.messaging's
    form (it signed rpcmq's form of it, which the caller never saw, and
    the caller refused the reply as Unauthenticated)."""
    assert rpc.call({'user': 'ann'}, 'add', a=2, b=3) == 5
    assert rpc.call({'user': 'ann'}, 'whoami') == 'ann'
    with pytest.raises(rpcmq.NoSuchMethod):
        rpc.call({}, 'mul', a=2, b=3)
