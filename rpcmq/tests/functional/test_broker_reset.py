"""A broker that lost rpcmq's exchanges and queues (reset, a fresh node
behind the same address, or deleted by hand) must not swallow casts: the
client declares them again and every cast sent afterwards arrives."""

import uuid

import kombu
import pytest

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.proxy import TcpProxy
from rpcmq.tests.functional.test_rabbit import KOMBU_URL
from rpcmq.tests.scenarios.rpc import Env, wait_for


def env_on(url):
    env = Env(url)
    env.conf.set_override('control_exchange',
                          'rpcmq-reset-%s' % uuid.uuid4().hex[:8])
    env.conf.set_override('rabbit_retry_interval', 0.2, group='rabbit')
    return env


def messages_in(queue):
    with kombu.Connection(KOMBU_URL) as conn:
        return conn.channel().queue_declare(queue, passive=True).message_count


def serve_and_count(env, expected):
    """Start a server on the topic; True once it handled ``expected``
    casts."""
    endpoint = DiagEndpoint(unsafe=True)
    env.serve([endpoint])
    return wait_for(lambda: endpoint.count({}) >= expected, timeout=20) \
        and endpoint.count({}) == expected


@pytest.mark.parametrize('lost', ['queue', 'queue and exchange'])
def test_casts_after_entities_were_deleted_arrive(rabbit_url, lost):
    env = env_on(rabbit_url)
    try:
        client = env.client(timeout=10)
        client.cast({}, 'bump')
        assert env.transport.flush(10)
        delete_entities(rabbit_url, [env.topic],
                        [env.conf.control_exchange]
                        if lost == 'queue and exchange' else [], strict=True)
        # A missing exchange closes the channel; a missing queue returns
        # the cast unroutable. Either way the client declares again.
        for _ in range(5):
            client.cast({}, 'bump')
        assert env.transport.flush(10)
        assert messages_in(env.topic) == 5
        assert serve_and_count(env, 5)
    finally:
        env.close()
        delete_entities(rabbit_url, [env.topic], [env.conf.control_exchange])


def test_casts_after_a_broker_reset_arrive(rabbit_url):
    """The connection drops and the broker comes back without our
    entities, as after `rabbitmqctl reset` or a node replaced."""
    with TcpProxy('127.0.0.1', 5672) as proxy:
        env = env_on('rabbit://guest:guest@127.0.0.1:%d/' % proxy.port)
        try:
            client = env.client(timeout=10)
            client.cast({}, 'bump')
            assert env.transport.flush(10)
            proxy.cut()
            delete_entities(rabbit_url, [env.topic],
                            [env.conf.control_exchange], strict=True)
            proxy.restore()
            for _ in range(3):
                client.cast({}, 'bump')
            assert env.transport.flush(10)
            assert messages_in(env.topic) == 3
            # Calls work again too, once a server is back on the topic.
            assert serve_and_count(env, 3)
            assert env.client().call({}, 'echo', x='after reset') == \
                'after reset'
        finally:
            env.close()
            delete_entities(rabbit_url, [env.topic],
                            [env.conf.control_exchange])
