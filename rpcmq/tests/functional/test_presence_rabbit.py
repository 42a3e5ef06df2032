"""A real rpcmq-server announces itself on RabbitMQ: ``server.alive`` with
its load while it runs, ``server.stopped`` after SIGTERM."""

import uuid

import pytest

import rpcmq
from rpcmq.notify import get_notification_listener
from rpcmq.observe.presence import ALIVE, EVENTS, STOPPED
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.presence import Seen


@pytest.fixture
def world(rabbit_url, tmp_path):
    """Names of this test's own, a listener bound to ``server.*`` on its
    notification exchange, and the config of a server to start."""
    tag = uuid.uuid4().hex[:10]
    names = {'control_exchange': 'rpcmq_presence_%s' % tag,
             'notification_exchange': 'rpcmq_presence_notify_%s' % tag,
             'topic': 'presence_%s' % tag, 'host': 'announcer-%s' % tag}
    transport = rpcmq.get_transport(make_conf(
        control_exchange=names['control_exchange'],
        notification_exchange=names['notification_exchange']),
        url=rabbit_url)
    seen = Seen(names['host'])
    listener = get_notification_listener(
        transport, [rpcmq.Target(topic=EVENTS)], [seen])
    listener.start()
    config = write_config(tmp_path / 'server.conf', {
        'DEFAULT': dict(names, transport_url=rabbit_url, endpoints='diag',
                        executor='eventlet', executor_thread_pool_size=3,
                        graceful_shutdown_timeout=5),
        'diag': {'unsafe_methods': 'true'},  # sleep holds a worker
        'status': {'announce_interval': 0.5}})
    daemon = Daemon('rpcmq-server', config, tmp_path / 'server.log')
    try:
        assert listener.ready.is_set(), 'notification listener not ready'
        yield names, transport, seen, daemon
    finally:
        daemon.stop()
        listener.stop()
        listener.wait(5)
        transport.cleanup()
        topic = names['topic']
        delete_entities(rabbit_url, [topic, '%s.%s' % (topic, names['host'])],
                        [names['control_exchange'],
                         names['notification_exchange'],
                         '%s_fanout' % topic])


def test_a_server_daemon_announces_itself_until_it_is_stopped(world):
    names, transport, seen, daemon = world
    daemon.start()
    _, first, _ = seen.wait_for(
        lambda t, p, _: t == ALIVE and p['health'] is None, timeout=30,
        what='a healthy server.alive')
    assert first['topic'] == names['topic']
    assert first['server'] == names['host']
    assert first['pid'] == daemon.proc.pid
    assert (first['executor'], first['size']) == ('eventlet', 3)
    assert first['interval'] == 0.5
    assert first['version'] == rpcmq.__version__
    # Every interval, with the load of the moment.
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic=names['topic']),
                             timeout=10)
    client.cast({}, 'sleep', seconds=1.5)
    _, busy, _ = seen.wait_for(
        lambda t, p, _: t == ALIVE and p['busy'] >= 1, timeout=30,
        what='server.alive with busy >= 1')
    assert busy['started_at'] == first['started_at']
    seen.wait_for(lambda t, p, _: t == ALIVE and p['busy'] == 0 and
                  p['sent_at'] > busy['sent_at'], timeout=30,
                  what='busy 0 again')

    assert daemon.terminate(timeout=30) == 0, daemon.log()
    _, stopped, _ = seen.wait_for(lambda t, p, _: t == STOPPED,
                                  timeout=30, what=STOPPED)
    assert stopped['pid'] == daemon.proc.pid
    types = seen.types()
    assert types[-1] == STOPPED and types.count(STOPPED) == 1
    assert 'could not publish' not in daemon.log()
