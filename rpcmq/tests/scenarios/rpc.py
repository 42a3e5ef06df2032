"""RPC behaviour every transport must show; imported by the per-broker
test modules, which provide a ``url`` fixture (memory://, rabbit://, redis://).
"""

import json
import threading
import time
import uuid

import kombu
import pytest

import rpcmq
from rpcmq import Target
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf


def reply_readers(monkeypatch):
    """The name of the thread that read each reply from now on, in order
    (the reply consumer's, or a caller reading its own)."""
    from rpcmq.transport import reply
    names = []
    on_reply = reply.ReplyWaiter._on_reply

    def recording(self, message):
        names.append(threading.current_thread().name)
        return on_reply(self, message)
    monkeypatch.setattr(reply.ReplyWaiter, '_on_reply', recording)
    return names


class Named(DiagEndpoint):
    """A diag endpoint that also says which server ran it."""

    def __init__(self, name):
        super().__init__(unsafe=True)
        self.host = name
        self.seen = []

    def who(self, ctxt, n=0):
        self.seen.append(n)
        return self.host

    def whoami(self, ctxt):
        return ctxt.get('user')


class Versioned:
    target = Target(namespace='image', version='1.2')

    def fetch(self, ctxt, url):
        return 'fetched ' + url


class Env:
    """A transport, servers on a fresh topic, and clients for them."""

    def __init__(self, url, executor='threading'):
        self.url = url
        self.conf = make_conf(rpc_response_timeout=10)
        self.transport = rpcmq.get_transport(self.conf, url=url)
        self.topic = 'scn_%s' % uuid.uuid4().hex[:10]
        self.executor = executor
        self.servers = []
        self.queues = set()

    def serve(self, endpoints, server='s1', executor_size=None):
        self.queues.add('%s.%s' % (self.topic, server))
        srv = rpcmq.get_rpc_server(
            self.transport, Target(topic=self.topic, server=server),
            endpoints, executor=self.executor, executor_size=executor_size)
        srv.start()
        self.servers.append(srv)
        return srv

    def client(self, timeout=10, **fields):
        return rpcmq.RPCClient(self.transport,
                               Target(topic=self.topic, **fields),
                               timeout=timeout)

    def close(self):
        for srv in self.servers:
            srv.stop()
        for srv in self.servers:
            srv.wait(10)
        self.transport.cleanup()
        self.delete_queues()

    def delete_queues(self):
        """Durable topic queues outlive the test on a real broker."""
        delete_entities(self.url, self.queues | {self.topic})


@pytest.fixture
def env(url):
    e = Env(url)
    yield e
    e.close()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_call_returns_the_result_and_passes_the_context(env):
    env.serve([Named('s1')])
    client = env.client()
    assert client.call({'user': 'alice'}, 'whoami') == 'alice'
    assert client.call({}, 'echo', x={'a': [1, 'b']}) == {'a': [1, 'b']}


def test_cast_runs_without_a_reply(env):
    ep = Named('s1')
    env.serve([ep])
    client = env.client()
    for _ in range(20):
        client.cast({}, 'bump')
    assert wait_for(lambda: ep.count({}) == 20)


def test_fanout_cast_reaches_every_server(env):
    eps = [Named('s%d' % i) for i in range(3)]
    for i, ep in enumerate(eps):
        env.serve([ep], server='s%d' % i)
    env.client(fanout=True).cast({}, 'bump', n=5)
    assert wait_for(lambda: [ep.count({}) for ep in eps] == [5, 5, 5])


def test_call_pinned_to_a_server_reaches_only_it(env):
    for name in ('a', 'b'):
        env.serve([Named(name)], server=name)
    pinned = env.client().prepare(server='b')
    assert {pinned.call({}, 'who') for _ in range(10)} == {'b'}


class Meeting(DiagEndpoint):
    """``meet`` returns only once two calls are running at the same time."""

    def __init__(self, name, barrier):
        super().__init__(unsafe=True)
        self.host = name
        self.barrier = barrier

    def meet(self, ctxt):
        self.barrier.wait()
        return self.host


def test_a_busy_server_leaves_calls_to_the_other_servers(env):
    # Each server has one worker, so it takes one call at a time (prefetch
    # follows the workers): two calls that must run together can only
    # finish if each server took one of them.
    barrier = threading.Barrier(2, timeout=20)
    env.serve([Meeting('a', barrier)], server='a', executor_size=1)
    env.serve([Meeting('b', barrier)], server='b', executor_size=1)
    client = env.client(timeout=30)
    for _ in range(5):
        hosts = []

        def meet(hosts=hosts):
            hosts.append(client.call({}, 'meet'))
        callers = [threading.Thread(target=meet) for _ in range(2)]
        [t.start() for t in callers]
        [t.join(40) for t in callers]
        assert sorted(hosts) == ['a', 'b']


def test_concurrent_callers_each_get_their_own_reply(env):
    env.serve([Named('s1')])
    client = env.client()
    results, errors = {}, []

    def worker(k):
        try:
            results[k] = [client.call({}, 'echo', x='%d-%d' % (k, i))
                          for i in range(10)]
        except Exception as exc:
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors
    assert results == {k: ['%d-%d' % (k, i) for i in range(10)]
                       for k in range(8)}


def test_timeout_raises_and_the_late_reply_is_dropped(env):
    env.serve([Named('s1')])
    slow = env.client(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(rpcmq.MessagingTimeout) as err:
        slow.call({}, 'sleep', seconds=1.5)
    assert time.monotonic() - started < 1.4
    assert 'sleep' in str(err.value)
    time.sleep(1.3)  # the late reply arrives and must not confuse this call
    assert env.client().call({}, 'echo', x='after') == 'after'


def test_remote_errors_arrive_with_their_type(env):
    env.serve([Named('s1')])
    client = env.client()
    with pytest.raises(RuntimeError) as err:
        client.call({}, 'fail', message='disk full')
    assert str(err.value) == 'disk full'
    # No server paths leak to callers unless debug_tracebacks is on.
    assert err.value.remote_traceback == ''


def test_debug_tracebacks_sends_the_server_traceback(env):
    env.conf.set_override('debug_tracebacks', True)
    env.serve([Named('s1')])
    with pytest.raises(RuntimeError) as err:
        env.client().call({}, 'fail', message='disk full')
    assert 'RuntimeError' in err.value.remote_traceback
    assert 'Traceback' in err.value.remote_traceback


def test_unknown_method_and_version_mismatch(env):
    env.serve([Versioned()])
    client = env.client(namespace='image', version='1.1')
    assert client.call({}, 'fetch', url='u') == 'fetched u'
    with pytest.raises(rpcmq.NoSuchMethod):
        client.call({}, 'delete', url='u')
    with pytest.raises(rpcmq.UnsupportedVersion):
        client.prepare(version='1.5').call({}, 'fetch', url='u')
    with pytest.raises(rpcmq.UnsupportedVersion):
        client.prepare(version='2.0').call({}, 'fetch', url='u')
    with pytest.raises(rpcmq.InvalidArguments):
        client.call({}, 'fetch', link='u')


def test_oversized_request_is_refused_before_publishing(env):
    env.conf.set_override('max_message_size', 2048)
    env.serve([Named('s1')])
    with pytest.raises(rpcmq.MessageTooLarge) as err:
        env.client().call({}, 'echo', x='y' * 4096)
    assert '2048' in str(err.value)


def raw_call(env, body, serializer=None, exchange=None, cast=False):
    """What a plain AMQP client does: its own reply queue, one request.

    ``body`` is bytes (sent as JSON) or an object for ``serializer``.
    Returns the reply as a dict (None for a cast).
    """
    driver = env.transport.driver
    if exchange is None:
        exchange = driver.exchange('rpcmq')
    urls = driver.url.kombu_urls(driver.kombu_scheme, driver.default_vhost)
    props = {'serializer': serializer} if serializer else {
        'serializer': None, 'content_type': 'application/json',
        'content_encoding': 'utf-8'}
    with kombu.Connection(urls) as conn:
        if cast:
            conn.Producer().publish(body, exchange=exchange,
                                    routing_key=env.topic, **props)
            return None
        reply_q = kombu.Queue('plain_%s' % uuid.uuid4().hex,
                              exclusive=True, auto_delete=True)
        got = []
        with conn.Consumer(reply_q, callbacks=[
                lambda b, m: got.append((m.body, m.properties))]):
            conn.Producer().publish(
                body, exchange=exchange, routing_key=env.topic,
                reply_to=reply_q.name,
                correlation_id='c-1', **props)
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
    assert got, 'no reply to a plain client'
    raw, properties = got[0]
    assert properties['correlation_id'] == 'c-1'
    return json.loads(raw)


@pytest.mark.parametrize('body, reason', [
    (b'this is not json', 'not JSON'),
    (b'{"args": {}}', '"method"'),
    (b'{"method": "echo", "args": ["x"]}', '"args"'),
])
def test_malformed_raw_messages_get_an_error_reply(env, body, reason):
    """A plain AMQP client gets a clear failure, and the queue moves on."""
    env.serve([Named('s1')])
    failure = raw_call(env, body)['failure']
    assert failure['type'] == 'MalformedMessage'
    assert reason in failure['message']
    # A malformed cast is dropped with a log line; later work still runs.
    raw_call(env, body, cast=True)
    assert env.client().call({}, 'echo', x='still serving') == \
        'still serving'
