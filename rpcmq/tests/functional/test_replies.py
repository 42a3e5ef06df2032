"""Who reads a client's replies, on the real RabbitMQ.

A caller waiting for its reply reads the reply connection itself when
nobody else does: one thread wake-up per call instead of two (the reply
consumer's, then the caller's). Replies of other calls it meets are
handed to their callers; the consumer thread, which owns the connection,
reads while calls wait and no caller reads, and keeps its heartbeats.
"""

import socket
import threading
import time
import uuid

import amqp
import kombu
import pytest

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.observe import metrics
from rpcmq.testing.cleanup import delete_entities
from rpcmq.tests.functional.test_rabbit import _calls_work
from rpcmq.tests.scenarios.rpc import Env, reply_readers, wait_for


@pytest.fixture
def readers(monkeypatch):
    """The name of the thread that read each reply, in order."""
    return reply_readers(monkeypatch)


@pytest.fixture
def served(rabbit_url):
    """An Env whose topic a server answers (``diag``, unsafe methods)."""
    env = Env(rabbit_url)
    env.serve([DiagEndpoint(unsafe=True)])
    yield env
    env.close()


def test_a_lone_call_is_read_by_its_caller(served, readers):
    client = served.client(timeout=10)
    client.call({}, 'echo', x=0)  # the reply consumer is up
    del readers[:]
    for i in range(20):
        assert client.call({}, 'echo', x=i) == i
    assert readers == [threading.current_thread().name] * 20


def test_calls_behind_a_reading_caller_get_their_replies(served, readers):
    client = served.client(timeout=20)
    client.call({}, 'echo', x=0)
    del readers[:]
    slow_done, fast_done, errors = [], [], []

    def slow():
        slow_done.append((client.call({}, 'sleep', seconds=3),
                          time.monotonic()))

    def fast(k):
        try:
            for i in range(20):
                assert client.call({}, 'echo', x=[k, i]) == [k, i]
            fast_done.append(time.monotonic())
        except Exception as exc:  # shown by the assertion below
            errors.append(exc)
    leader = threading.Thread(target=slow, name='slow caller')
    leader.start()
    # The slow call reads for itself once its request is out.
    deadline = time.monotonic() + 10
    while served.transport.replies._reader is not leader:
        assert time.monotonic() < deadline, 'the slow caller never read'
        threading.Event().wait(0.005)
    callers = [threading.Thread(target=fast, args=(k,)) for k in range(8)]
    [t.start() for t in callers]
    [t.join(30) for t in callers]
    leader.join(30)
    assert errors == [] and len(fast_done) == 8
    [(result, slow_end)] = slow_done
    # 160 replies handed on while the slow call still waited for its own.
    assert max(fast_done) < slow_end
    assert readers.count('slow caller') > 1


def test_a_short_heartbeat_client_keeps_its_connection_idle_and_busy(
        rabbit_url, served):
    env = Env(rabbit_url)
    env.conf.set_override('heartbeat_timeout_threshold', 2, group='rabbit')
    env.topic = served.topic
    lost = metrics.RECONNECTS.labels('reply consumer')
    try:
        client = env.client(timeout=10)
        assert client.call({}, 'echo', x='first') == 'first'
        connection = env.transport.replies._active
        before = lost._value.get()
        # Idle for three heartbeat periods: only the owner reads now.
        threading.Event().wait(6)
        assert client.call({}, 'echo', x='after idle') == 'after idle'
        # Then busy for as long: the callers read, the owner checks.
        until = time.monotonic() + 6
        while time.monotonic() < until:
            assert client.call({}, 'echo', x=1) == 1
        assert env.transport.replies._active is connection
        assert lost._value.get() == before
    finally:
        env.transport.cleanup()


def test_a_channel_closed_under_a_reading_caller_is_opened_again(
        rabbit_url, readers):
    """The broker closes the reply channel (a request went to an exchange
    deleted behind the client's back) while the caller reads it: the
    error reaches the consumer thread, which consumes again, and calls
    work again; the consumer is never left deaf."""
    env = Env(rabbit_url)
    env.conf.set_override('control_exchange',
                          'rpcmq-replies-%s' % uuid.uuid4().hex[:8])
    env.conf.set_override('rabbit_retry_interval', 0.2, group='rabbit')
    env.serve([DiagEndpoint(unsafe=True)])
    try:
        client = env.client(timeout=5)
        assert client.call({}, 'echo', x='before') == 'before'
        assert readers[-1] == threading.current_thread().name
        delete_entities(rabbit_url, [], [env.conf.control_exchange],
                        strict=True)
        with pytest.raises(rpcmq.MessagingTimeout):
            client.call({}, 'echo', x='lost')
        assert wait_for(lambda: _calls_work(client), timeout=20)
    finally:
        env.close()
        delete_entities(rabbit_url, [], [env.conf.control_exchange])


def test_a_request_left_to_a_write_that_fails_is_sent_again(
        served, monkeypatch):
    """A caller whose request another caller is writing does not wait
    for that write. When it fails before the request left whole (the
    connection dies under it), the caller, waiting for its reply by then,
    sends its request again on the next connection and gets its answer:
    the broker never had it, so it runs once."""
    client = served.client(timeout=20)
    client.call({}, 'echo', x=0)  # the reply connection is up
    replies = served.transport.replies
    connection = replies._channel.connection
    writer, transport = connection._frame_writer, connection.transport
    socket_write = transport.write
    writing, seen = threading.Event(), {}

    def write_then_die(data):
        if not writing.is_set():  # the first caller's request
            writing.set()
            assert wait_for(lambda: writer._pending, timeout=10)
            seen['waiting'] = writer._waiters  # the second did not wait
            return socket_write(data)
        transport.sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError('connection reset by peer')
    monkeypatch.setattr(transport, 'write', write_then_die)
    results = {}

    def call(name):
        try:
            results[name] = client.call({}, 'echo', x=name)
        except rpcmq.MessagingTimeout as exc:  # its reply was on the
            results[name] = exc                 # connection that died
    first = threading.Thread(target=call, args=('first',))
    first.start()
    assert writing.wait(10)
    call('second')
    first.join(30)
    assert results['second'] == 'second'
    assert seen == {'waiting': 0}
    assert replies._channel.connection is not connection
    assert results['first'] == 'first' or \
        isinstance(results['first'], rpcmq.MessagingTimeout)


def test_a_request_whose_write_fails_is_sent_on_the_next_connection(
        served, monkeypatch):
    """The connection dies under the write of a call's request: the
    broker never had it, so the caller sends it on the next connection
    and gets its answer, not "lost, may or may not have run"."""
    client = served.client(timeout=20)
    client.call({}, 'echo', x=0)  # the reply connection is up
    replies = served.transport.replies
    connection = replies._channel.connection
    transport = connection.transport

    def die(data):
        transport.sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError('connection reset by peer')
    monkeypatch.setattr(transport, 'write', die)
    assert client.call({}, 'echo', x='again') == 'again'
    assert replies._channel.connection is not connection


def test_a_reply_nobody_can_decode_costs_only_itself(rabbit_url, caplog):
    # A rogue server answers each request twice: first with a correlation
    # id that is not UTF-8 (RabbitMQ passes it on, py-amqp cannot decode
    # it), then properly. The first used to kill the client's reply
    # connection, failing the call (and every call it carried).
    env = Env(rabbit_url)
    outcome = []
    try:
        with kombu.Connection(rabbit_url.replace('rabbit:', 'amqp:',
                                                  1)) as conn:
            channel = conn.channel()
            queue = kombu.Queue('rogue_%s' % uuid.uuid4().hex[:8],
                                env.transport.driver.exchange('rpcmq'),
                                routing_key=env.topic, auto_delete=True)
            queue(channel).declare()

            def answer(request):
                props = request.properties
                for cid in (b'\xff\xfe', props['correlation_id']):
                    channel.basic_publish(amqp.Message(
                        b'{"result": "ok"}', correlation_id=cid,
                        content_type='application/json'),
                        exchange='', routing_key=props['reply_to'])
            channel.basic_consume(queue.name, callback=answer, no_ack=True)

            def call():
                client = env.client(timeout=10)
                outcome.append(client.call({}, 'anything'))
                outcome.append(client.call({}, 'again'))
            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            deadline = time.monotonic() + 20
            while caller.is_alive() and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except socket.timeout:
                    pass
            caller.join(1)
    finally:
        env.close()
    assert outcome == ['ok', 'ok']
    # Dropped alone; the reply connection was never given up.
    dropped = [r.getMessage() for r in caplog.records
               if r.name == 'rpcmq.transport.inbound']
    assert len(dropped) == 2  # one per call
    assert all('its consumer does not ack' in line for line in dropped)
    assert [r.getMessage() for r in caplog.records
            if r.name == 'rpcmq.transport.consuming'] == []
