"""What only RabbitMQ shows: the eventlet daemon, lost connections,
expiring requests, plain AMQP clients."""

import threading
import time
import uuid

import amqp.exceptions
import kombu
import pytest

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.proxy import TcpProxy
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.scenarios.rpc import Env, raw_call, wait_for

KOMBU_URL = 'amqp://guest:guest@127.0.0.1:5672//'


def start_diag_daemon(rabbit_url, tmp_path, host, executor):
    topic = 'diag_%s' % uuid.uuid4().hex[:8]
    conf = write_config(tmp_path / 'rpcmq.conf', {'DEFAULT': {
        'transport_url': rabbit_url, 'endpoints': 'diag', 'topic': topic,
        'host': host, 'executor': executor,
        'graceful_shutdown_timeout': 10},
        'diag': {'unsafe_methods': 'true'}})
    daemon = Daemon('rpcmq-server', conf, tmp_path / 'server.log').start()
    daemon.topic = topic
    daemon.server_queue = '%s.%s' % (topic, host)
    return daemon


@pytest.fixture
def diag_daemon(rabbit_url, tmp_path):
    daemon = start_diag_daemon(rabbit_url, tmp_path, 'green-1', 'eventlet')
    daemon.wait_for_log('rpcmq-server started')
    yield daemon
    daemon.stop()
    # A daemon still running when a test deleted its queues declared them
    # again on the consumer cancel: delete them once it is gone.
    delete_entities(rabbit_url, [daemon.topic, daemon.server_queue])


def sleep_together(client, calls=20, seconds=0.5):
    """(hosts that answered, seconds taken) for ``calls`` concurrent
    sleeping calls."""
    hosts = []
    threads = [threading.Thread(target=lambda: hosts.append(
        client.call({}, 'sleep', seconds=seconds))) for _ in range(calls)]
    started = time.monotonic()
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    return hosts, time.monotonic() - started


def test_eventlet_daemon_serves_calls_and_casts(rabbit_url, diag_daemon):
    env = Env(rabbit_url)
    env.topic = diag_daemon.topic
    env.queues.add(diag_daemon.server_queue)  # deleted by env.close()
    try:
        client = env.client()
        pong = client.call({}, 'ping')
        assert pong['host'] == 'green-1' and pong['green'] is True
        # 20 sleeping calls at once finish together on green threads.
        hosts, took = sleep_together(client)
        assert hosts == ['green-1'] * 20 and took < 5
        for _ in range(10):
            client.cast({}, 'bump')
        assert wait_for(lambda: client.call({}, 'count') == 10)
    finally:
        env.close()
    assert diag_daemon.terminate() == 0
    assert 'rpcmq-server stopped' in diag_daemon.log()


def test_threading_daemon_runs_on_os_threads(rabbit_url, tmp_path):
    daemon = start_diag_daemon(rabbit_url, tmp_path, 'os-1', 'threading')
    env = Env(rabbit_url)
    env.topic = daemon.topic
    env.queues.add(daemon.server_queue)  # deleted by env.close()
    try:
        daemon.wait_for_log('rpcmq-server started')
        client = env.client()
        pong = client.call({}, 'ping')
        # Re-executed without eventlet's patching, under the same pid.
        assert pong['green'] is False and pong['pid'] == daemon.proc.pid
        hosts, took = sleep_together(client)
        assert hosts == ['os-1'] * 20 and took < 5
        assert daemon.terminate() == 0
    finally:
        env.close()
        daemon.stop()
    assert 'rpcmq-server stopped' in daemon.log()


def test_sigterm_lets_a_running_call_finish(rabbit_url, diag_daemon):
    env = Env(rabbit_url)
    env.topic = diag_daemon.topic
    env.queues.add(diag_daemon.server_queue)  # deleted by env.close()
    result = []
    try:
        caller = threading.Thread(target=lambda: result.append(
            env.client().call({}, 'sleep', seconds=2)))
        caller.start()
        time.sleep(0.5)
        assert diag_daemon.terminate() == 0
        caller.join(10)
        assert result == ['green-1']
    finally:
        env.close()


def test_a_cast_whose_server_dies_is_redelivered(rabbit_url, diag_daemon,
                                                 tmp_path):
    env = Env(rabbit_url)
    env.topic = diag_daemon.topic
    env.queues.add(diag_daemon.server_queue)  # deleted by env.close()
    try:
        env.client().cast({}, 'sleep', seconds=3)
        time.sleep(0.5)
        diag_daemon.kill()  # mid-cast: it was never acked
        slept = []

        class Survivor(DiagEndpoint):
            def sleep(self, ctxt, seconds):
                slept.append(seconds)

        env.serve([Survivor()], server='survivor')
        assert wait_for(lambda: slept == [3])
        queue = env.transport.driver.topic_queue('rpcmq', env.topic)
        with kombu.Connection(KOMBU_URL) as conn:
            _, count, _ = queue(conn.default_channel).queue_declare(
                passive=True)
        assert count == 0
    finally:
        env.close()


def test_connection_cut_mid_run_recovers(rabbit_url):
    with TcpProxy('127.0.0.1', 5672) as proxy:
        url = 'rabbit://guest:guest@127.0.0.1:%d/' % proxy.port
        env = Env(url)
        env.conf.set_override('rabbit_retry_interval', 0.2, group='rabbit')
        env.conf.set_override('rabbit_interval_max', 0.5, group='rabbit')
        env.serve([DiagEndpoint(unsafe=True)])
        try:
            client = env.client(timeout=3)
            assert client.call({}, 'echo', x='before') == 'before'
            outcome = []

            def in_flight():
                try:
                    outcome.append(client.call({}, 'sleep', seconds=1))
                except rpcmq.MessagingTimeout as exc:
                    outcome.append(exc)
            caller = threading.Thread(target=in_flight)
            caller.start()
            time.sleep(0.3)
            proxy.cut()
            time.sleep(1.0)
            proxy.restore()
            caller.join(10)
            assert not caller.is_alive(), 'a call hung after the cut'
            assert len(outcome) == 1
            # The in-flight call either completed or timed out: never hung.
            assert outcome[0] is None or isinstance(
                outcome[0], rpcmq.MessagingTimeout)
            assert wait_for(lambda: _calls_work(client), timeout=20)
            assert client.call({}, 'echo', x='after') == 'after'
            assert proxy.connections > 3  # everyone reconnected
        finally:
            env.close()


def _calls_work(client):
    try:
        return client.call({}, 'echo', x=1) == 1
    except (rpcmq.MessagingTimeout, rpcmq.TransportError):
        return False


def test_a_call_that_timed_out_is_not_run_late(rabbit_url):
    env = Env(rabbit_url)
    try:
        late = env.client(timeout=0.5)
        with pytest.raises(rpcmq.MessagingTimeout):
            late.call({}, 'bump')  # nobody serves the topic yet
        time.sleep(0.8)
        ep = DiagEndpoint(unsafe=True)
        env.serve([ep])
        assert env.client().call({}, 'count') == 0
    finally:
        env.close()


def test_plain_amqp_client_calls_through_the_default_exchange(rabbit_url):
    """The RabbitMQ tutorial's RPC client: default exchange, queue name."""
    env = Env(rabbit_url)
    env.serve([DiagEndpoint(unsafe=True)])
    try:
        reply = raw_call(env, {'method': 'echo', 'args': {'x': 'tutorial'}},
                         serializer='json', exchange='')
        assert reply == {'result': 'tutorial'}
    finally:
        env.close()


def test_pickle_is_refused(rabbit_url):
    env = Env(rabbit_url)
    env.serve([DiagEndpoint(unsafe=True)])
    try:
        failure = raw_call(env, {'method': 'echo', 'args': {'x': 1}},
                           serializer='pickle')['failure']
        assert failure['type'] == 'MalformedMessage'
        assert 'application/json' in failure['message']
    finally:
        env.close()


def test_unreachable_broker_fails_a_call_within_its_timeout():
    conf = make_conf()
    conf.set_override('rabbit_retry_interval', 0.1, group='rabbit')
    transport = rpcmq.get_transport(
        conf, url='rabbit://guest:guest@127.0.0.1:1/')
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic='x'), timeout=1)
    started = time.monotonic()
    with pytest.raises((rpcmq.MessagingTimeout, rpcmq.TransportError)):
        client.call({}, 'ping')
    with pytest.raises(rpcmq.TransportError) as err:
        client.cast({}, 'ping')
    assert '127.0.0.1:1' in str(err.value)
    assert time.monotonic() - started < 5
    transport.cleanup()


def test_casts_survive_a_cut_connection(rabbit_url):
    """Pipelined confirms: casts the broker did not confirm before the
    connection broke are published again; none is lost."""
    server_env = Env(rabbit_url)
    ep = DiagEndpoint(unsafe=True)
    server_env.serve([ep])
    with TcpProxy('127.0.0.1', 5672) as proxy:
        env = Env('rabbit://guest:guest@127.0.0.1:%d/' % proxy.port)
        env.conf.set_override('rabbit_retry_interval', 0.2, group='rabbit')
        env.topic = server_env.topic
        try:
            client = env.client(timeout=20)
            for i in range(2000):
                client.cast({}, 'bump')
                if i == 1000:
                    proxy.cut()
                    threading.Timer(0.5, proxy.restore).start()
            assert env.transport.flush(20)
            # At-least-once: every cast arrived, some perhaps twice.
            assert wait_for(lambda: ep.count({}) >= 2000, timeout=20)
        finally:
            env.close()
            server_env.close()


def test_failover_to_the_next_host_in_the_url():
    env = Env('rabbit://guest:guest@127.0.0.1:1,guest:guest@127.0.0.1:5672/')
    try:
        env.serve([DiagEndpoint(unsafe=True)])
        assert env.client().call({}, 'echo', x='second host') == 'second host'
    finally:
        env.close()


@pytest.mark.parametrize('direct', [True, False])
def test_replies_by_direct_reply_to_or_an_exclusive_queue(rabbit_url, direct):
    env = Env(rabbit_url)
    env.conf.set_override('direct_reply_to', direct, group='rabbit')
    env.serve([DiagEndpoint(unsafe=True)])
    try:
        assert env.client().call({}, 'echo', x=direct) == direct
        name = env.transport.replies.queue_name
        assert (name == 'amq.rabbitmq.reply-to') is direct
        if not direct:  # the client's connection holds its reply queue
            with kombu.Connection(KOMBU_URL) as conn:
                with pytest.raises(amqp.exceptions.ResourceLocked):
                    kombu.Queue(name, exclusive=True)(
                        conn.default_channel).queue_declare(passive=True)
    finally:
        env.close()


@pytest.mark.parametrize('direct', [True, False])
def test_a_call_whose_reply_connection_drops(rabbit_url, direct):
    """Direct reply-to: the reply could only come on the lost channel, so
    the call fails at once, not after its timeout. An exclusive reply
    queue comes back under the same name: the call gets its reply."""
    server_env = Env(rabbit_url)
    server_env.serve([DiagEndpoint(server_env.conf, unsafe=True)])
    with TcpProxy('127.0.0.1', 5672) as proxy:
        env = Env('rabbit://guest:guest@127.0.0.1:%d/' % proxy.port)
        env.topic = server_env.topic
        env.conf.set_override('direct_reply_to', direct, group='rabbit')
        env.conf.set_override('rabbit_retry_interval', 0.2, group='rabbit')
        try:
            client = env.client(timeout=30)
            assert client.call({}, 'echo', x=1) == 1
            threading.Timer(0.5, proxy.cut).start()
            threading.Timer(1.0, proxy.restore).start()
            started = time.monotonic()
            if direct:
                with pytest.raises(rpcmq.MessagingTimeout) as err:
                    client.call({}, 'sleep', seconds=3)
                assert time.monotonic() - started < 2.5
                assert 'was lost' in str(err.value)
            else:
                assert client.call({}, 'sleep', seconds=3) == \
                    server_env.conf.host
            assert wait_for(lambda: _calls_work(client), timeout=20)
        finally:
            env.close()
            server_env.close()
