"""An oslo.messaging service and rpcmq share topics (oslo_compat).

The story: an OpenStack-style service keeps its oslo.messaging clients
while its servers move to rpcmq one by one, and rpcmq callers reach the
oslo.messaging servers that are left. rpcmq servers started with
``[DEFAULT] oslo_compat = true``, the service's ``control_exchange`` and
``[rabbit] queue_type = classic`` take the same topics as the oslo servers,
on the real RabbitMQ.

The oslo side is a real oslo.messaging in a subprocess
(``rpcmq.tests.functional.oslopeer``); this process never imports it.
"""

import importlib.util
import json
import queue
import subprocess
import sys
import threading
import uuid

import pytest

import rpcmq
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.scenarios.rpc import wait_for

pytestmark = pytest.mark.timeout(180)

PEER = [sys.executable, '-m', 'rpcmq.tests.functional.oslopeer']
CALL_TIMEOUT = 20  # the oslo client's own timeout, seconds
PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical',
              'sample')
WIRE_KEYS = ('_msg_id', '_reply_q', '_unique_id', '_timeout', 'msg_id',
             'reply_q')


class Endpoint:
    """What the rpcmq servers offer (the oslo peer's server has the same)."""

    def __init__(self, name):
        self.name = name
        self._changed = threading.Condition()
        self._recorded = []

    def echo(self, ctxt, **kw):
        return kw

    def add(self, ctxt, a, b):
        return a + b

    def fail(self, ctxt, message):
        raise ValueError(message)

    def context(self, ctxt):
        return dict(ctxt)

    def whoami(self, ctxt):
        return self.name

    def sleep(self, ctxt, seconds):
        threading.Event().wait(seconds)
        return seconds

    def record(self, ctxt, value):
        with self._changed:
            self._recorded.append(value)
            self._changed.notify_all()

    def recorded(self):
        with self._changed:
            return list(self._recorded)

    def wait_recorded(self, count, timeout=30):
        """The values recorded once there are ``count``; AssertionError if
        they are fewer after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(
                    lambda: len(self._recorded) >= count, timeout):
                raise AssertionError('%s recorded %r, not %d values within '
                                     '%ss' % (self.name, self._recorded,
                                              count, timeout))
            return list(self._recorded)


class _Peer:
    """An oslopeer subprocess whose stdout lines are read with a deadline."""

    def __init__(self, mode, log, *argv):
        self.log = log
        with open(log, 'w') as err:
            self.proc = subprocess.Popen(
                PEER + [mode, *argv], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip('\n'))
        self._lines.put(None)  # EOF

    def readline(self, timeout, what):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('oslo peer: no %s within %ss; stderr:\n%s'
                                 % (what, timeout, self.stderr()))
        if line is None:
            raise AssertionError('oslo peer exited (code %s) before %s; '
                                 'stderr:\n%s' % (self.proc.wait(10), what,
                                                  self.stderr()))
        return line

    def drain(self):
        """The lines printed so far and not read yet (no waiting)."""
        lines = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return lines
            if line is None:
                raise AssertionError('oslo peer exited (code %s); stderr:'
                                     '\n%s' % (self.proc.wait(10),
                                                self.stderr()))
            lines.append(line)

    def stderr(self):
        with open(self.log, errors='replace') as f:
            return f.read()[-4000:]

    def end_input(self):
        """End of stdin: the peer stops cleanly (see ``wait``)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self):
        """The peer's exit code; killed (-9) after 30 s."""
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class OsloClient(_Peer):
    """An oslo.messaging RPC client: ``call``/``cast`` return the peer's
    answer, ``{"ok": true, "result": ...}`` or ``{"ok": false, "type":
    ..., "message": ...}``."""

    def request(self, op, method, context=None, **args):
        self.proc.stdin.write(json.dumps({
            'op': op, 'method': method, 'args': args,
            'context': context or {}}) + '\n')
        self.proc.stdin.flush()
        return json.loads(self.readline(CALL_TIMEOUT + 20,
                                        'answer to %s %s' % (op, method)))

    def call(self, method, context=None, **args):
        return self.request('call', method, context, **args)

    def request_note(self, event_type, payload, priority='info',
                     context=None):
        """In ``notify`` mode: send one notification."""
        self.proc.stdin.write(json.dumps({
            'event_type': event_type, 'payload': payload,
            'priority': priority, 'context': context or {}}) + '\n')
        self.proc.stdin.flush()
        return json.loads(self.readline(CALL_TIMEOUT, 'notified'))

    def cast(self, method, **args):
        answer = self.request('cast', method, **args)
        assert answer == {'ok': True, 'result': None}, answer
        return answer


class OsloServer(_Peer):
    """An oslo.messaging RPC server; its ``record`` casts go to a file."""

    def __init__(self, log, record_file, *argv):
        super().__init__('server', log, '--record', str(record_file), *argv)
        self.record_file = record_file

    def wait_ready(self):
        assert self.readline(60, '"ready"') == 'ready'

    def recorded(self):
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in
                self.record_file.read_text().splitlines()]


class Story:
    """One exchange and topic of its own, rpcmq servers in oslo mode, oslo
    peers; ``close`` stops them all and deletes what they declared."""

    def __init__(self, url, workdir):
        self.url = url
        self.workdir = workdir
        self.exchange = 'oslo_compat_%s' % uuid.uuid4().hex[:10]
        self.topic = 'oslo_%s' % uuid.uuid4().hex[:10]
        self.names = set()
        self.transports = []
        self.servers = []
        self.peers = []
        self.listeners = []
        self.daemons = []

    def rpcmq_servers(self, *names, durable=False):
        """Start rpcmq servers (one transport) and return their Endpoints."""
        conf = make_conf(**{'oslo_compat': True,
                            'control_exchange': self.exchange,
                            'rabbit.queue_type': 'classic',
                            'rabbit.amqp_durable_queues': durable})
        transport = rpcmq.get_transport(conf, url=self.url)
        self.transports.append(transport)
        endpoints = []
        for name in names:
            self.names.add(name)
            endpoint = Endpoint(name)
            server = rpcmq.get_rpc_server(
                transport, rpcmq.Target(topic=self.topic, server=name),
                [endpoint], executor='threading')
            self.servers.append(server)
            assert server.start(ready_timeout=30), 'rpcmq %s not ready' % name
            endpoints.append(endpoint)
        return endpoints

    def rpcmq_daemon(self, host, executor):
        """An ``rpcmq-server`` daemon (the ``diag`` endpoint) in oslo
        mode, started and consuming."""
        self.names.add(host)
        conf = write_config(self.workdir / ('%s.conf' % host), {
            'DEFAULT': {'transport_url': self.url, 'endpoints': 'diag',
                        'topic': self.topic, 'host': host,
                        'executor': executor, 'oslo_compat': 'true',
                        'control_exchange': self.exchange,
                        'graceful_shutdown_timeout': 5},
            'rabbit': {'queue_type': 'classic'},
            'diag': {'unsafe_methods': 'true'}})
        daemon = Daemon('rpcmq-server', conf,
                        self.workdir / ('%s.log' % host)).start()
        self.daemons.append(daemon)
        daemon.wait_for_log('rpcmq-server started', timeout=60)
        return daemon

    def rpcmq_client(self, timeout=CALL_TIMEOUT, **target):
        """An rpcmq RPCClient in oslo mode for this story's topic."""
        conf = make_conf(**{'oslo_compat': True,
                            'control_exchange': self.exchange,
                            'rabbit.queue_type': 'classic'})
        transport = rpcmq.get_transport(conf, url=self.url)
        self.transports.append(transport)
        return rpcmq.RPCClient(transport, rpcmq.Target(topic=self.topic,
                                                       **target),
                               timeout=timeout)

    def _argv(self, *options):
        return ['--url', self.url, '--exchange', self.exchange,
                '--topic', self.topic, *options]

    def oslo_client(self, *options):
        log = self.workdir / ('oslo-client-%d.err' % len(self.peers))
        client = OsloClient('client', log, *self._argv(
            '--timeout', str(CALL_TIMEOUT), *options))
        self.peers.append(client)
        return client

    def oslo_server(self, name, *options):
        self.names.add(name)
        server = OsloServer(self.workdir / ('oslo-%s.err' % name),
                            self.workdir / ('oslo-%s.jsonl' % name),
                            *self._argv('--server', name, *options))
        self.peers.append(server)
        server.wait_ready()
        return server

    def oslo_notifier(self):
        log = self.workdir / ('oslo-notify-%d.err' % len(self.peers))
        peer = OsloClient('notify', log, *self._argv())
        self.peers.append(peer)
        return peer

    def oslo_listener(self, *options):
        log = self.workdir / ('oslo-listen-%d.err' % len(self.peers))
        peer = _Peer('listen', log, *self._argv(*options))
        self.peers.append(peer)
        assert peer.readline(60, '"ready"') == 'ready'
        return peer

    def rpcmq_notifier(self):
        conf = make_conf(**{'oslo_compat': True,
                            'control_exchange': self.exchange,
                            'rabbit.queue_type': 'classic'})
        transport = rpcmq.get_transport(conf, url=self.url)
        self.transports.append(transport)
        return rpcmq.Notifier(transport, 'rpcmq-test', wire='oslo',
                              topics=[self.topic])

    def rpcmq_listener(self, endpoint, pool=None):
        conf = make_conf(**{'oslo_compat': True,
                            'control_exchange': self.exchange,
                            'rabbit.queue_type': 'classic'})
        transport = rpcmq.get_transport(conf, url=self.url)
        self.transports.append(transport)
        listener = rpcmq.get_notification_listener(
            transport, [rpcmq.Target(topic=self.topic)], [endpoint],
            pool=pool, wire='oslo')
        listener.start()
        assert listener.ready.wait(30), 'rpcmq listener not ready'
        self.listeners.append(listener)
        return listener

    def close(self):
        for listener in self.listeners:
            listener.stop()
            listener.wait(10)
        for peer in self.peers:
            peer.end_input()
        codes = [peer.wait() for peer in self.peers]
        for daemon in self.daemons:
            assert daemon.terminate(30) == 0, daemon.log()
        for server in self.servers:
            server.stop()
        for server in self.servers:
            server.wait(10)
        for transport in self.transports:
            transport.cleanup()
        delete_entities(self.url, [self.topic, self.topic + '_dead'] +
                        ['%s.%s' % (self.topic, n) for n in self.names] +
                        ['%s.%s' % (self.topic, p) for p in PRIORITIES] +
                        ['pool_' + self.topic],
                        [self.exchange, self.topic + '_fanout'])
        return codes


def queue_depth(name):
    """Ready plus unacknowledged messages of a queue (rabbitmqctl)."""
    out = subprocess.run(['rabbitmqctl', '-q', 'list_queues', 'name',
                          'messages'], capture_output=True, text=True,
                         timeout=60).stdout
    for line in out.splitlines():
        fields = line.split('\t')
        if fields[0] == name:
            return int(fields[1])
    raise AssertionError('no queue %s on the broker' % name)


def queue_is_durable(name):
    out = subprocess.run(['rabbitmqctl', '-q', 'list_queues', 'name',
                          'durable'], capture_output=True, text=True,
                         timeout=60).stdout
    return dict(line.split('\t') for line in out.splitlines()
                if line.count('\t') == 1).get(name)


@pytest.fixture
def story(rabbit_url, tmp_path):
    if importlib.util.find_spec('oslo_messaging') is None:
        pytest.skip('oslo.messaging is not installed')
    s = Story(rabbit_url, tmp_path)
    yield s
    assert s.close() == [0] * len(s.peers), 'an oslo peer did not exit 0'


def ok(answer):
    assert answer.get('ok'), answer
    return answer['result']


def test_an_oslo_call_gets_the_rpcmq_result_and_passes_the_context(story):
    story.rpcmq_servers('r1')
    oslo = story.oslo_client()
    assert oslo.call('add', a=2, b=3) == {'ok': True, 'result': 5}
    assert ok(oslo.call('echo', x={'a': [1, 'b']})) == {'x': {'a': [1, 'b']}}
    ctxt = ok(oslo.call('context', {'user': 'alice', 'project_id': 'p1'}))
    assert ctxt['user'] == 'alice' and ctxt['project_id'] == 'p1', ctxt
    leaked = [k for k in ctxt if k in WIRE_KEYS or k.startswith('_context_')]
    assert not leaked, ctxt


def test_a_failing_endpoint_raises_its_error_in_the_oslo_caller(story):
    story.rpcmq_servers('r1')
    answer = story.oslo_client().call('fail', message='disk on fire')
    assert not answer['ok']
    # oslo rebuilds builtins exceptions as themselves
    assert (answer['type'], answer['module']) == ('ValueError', 'builtins'), \
        answer
    assert 'disk on fire' in answer['message']


def test_an_unknown_method_is_an_error_naming_it_not_a_timeout(story):
    story.rpcmq_servers('r1')
    answer = story.oslo_client().call('no_such_thing')
    assert not answer['ok']
    assert answer['type'] != 'MessagingTimeout', answer
    assert 'no_such_thing' in answer['message'], answer


def test_an_oslo_cast_runs_exactly_once(story):
    [r1] = story.rpcmq_servers('r1')
    oslo = story.oslo_client()
    oslo.cast('record', value='once')
    oslo.cast('record', value='after')
    assert sorted(r1.wait_recorded(2)) == ['after', 'once']
    # both acked: nothing is left to be delivered again
    assert wait_for(lambda: queue_depth(story.topic) == 0, timeout=30)
    assert sorted(r1.recorded()) == ['after', 'once']


def test_a_server_pinned_call_reaches_that_rpcmq_server(story):
    story.rpcmq_servers('r1', 'r2')
    oslo = story.oslo_client('--server', 'r2')
    assert [ok(oslo.call('whoami')) for _ in range(5)] == ['r2'] * 5


def test_a_fanout_cast_reaches_every_server_rpcmq_and_oslo(story):
    r1, r2 = story.rpcmq_servers('r1', 'r2')
    o1 = story.oslo_server('o1')
    story.oslo_client('--fanout').cast('record', value='to-all')
    assert r1.wait_recorded(1) == r2.wait_recorded(1) == ['to-all']
    assert wait_for(lambda: o1.recorded(), timeout=30), 'o1 recorded nothing'
    assert o1.recorded() == ['to-all']


def test_oslo_and_rpcmq_servers_share_a_topic(story):
    # the oslo server declares the topic's queues first, rpcmq joins them
    story.oslo_server('o1')
    story.rpcmq_servers('r1')
    oslo = story.oslo_client()
    answers = []
    for _ in range(20):
        answers.append(ok(oslo.call('whoami')))  # stops at the first error
    assert set(answers) == {'o1', 'r1'}, answers


def test_durable_queues_on_both_sides(story):
    [r1] = story.rpcmq_servers('r1', durable=True)
    oslo = story.oslo_client('--durable')
    assert oslo.call('add', a=20, b=22) == {'ok': True, 'result': 42}
    oslo.cast('record', value='durable')
    assert r1.wait_recorded(1) == ['durable']
    assert queue_is_durable(story.topic) == 'true'



# -- rpcmq callers, oslo.messaging servers ------------------------------------

def test_an_rpcmq_caller_gets_oslo_results_and_typed_errors(story):
    story.oslo_server('o1')
    client = story.rpcmq_client()
    assert client.call({'user': 'bob'}, 'add', a=2, b=3) == 5
    assert client.call({'user': 'bob'}, 'context')['user'] == 'bob'
    with pytest.raises(ValueError, match='disk on fire'):
        client.call({}, 'fail', message='disk on fire')
    with pytest.raises(rpcmq.NoSuchMethod) as raised:
        client.call({}, 'no_such_thing')
    assert raised.value.kwargs['method'] == 'no_such_thing'
    with pytest.raises(rpcmq.UnsupportedVersion):
        client.prepare(version='2.0').call({}, 'add', a=1, b=1)
    with pytest.raises(rpcmq.MessagingTimeout):
        client.prepare(timeout=1).call({}, 'sleep', seconds=3)
    assert client.call({}, 'add', a=1, b=1) == 2  # the late reply is dropped


def test_rpcmq_casts_and_fanout_casts_reach_oslo_servers(story):
    o1 = story.oslo_server('o1')
    [r1] = story.rpcmq_servers('r1')
    client = story.rpcmq_client()
    client.prepare(server='o1').cast({}, 'record', value='pinned')
    client.prepare(fanout=True).cast({}, 'record', value='to-all')
    assert client.transport.flush(30)
    assert wait_for(lambda: len(o1.recorded()) == 2, timeout=30), \
        o1.recorded()
    assert sorted(o1.recorded()) == ['pinned', 'to-all']
    assert r1.wait_recorded(1) == ['to-all']


def test_an_rpcmq_pinned_call_reaches_that_oslo_server(story):
    story.oslo_server('o1')
    story.oslo_server('o2')
    client = story.rpcmq_client(server='o2')
    assert [client.call({}, 'whoami') for _ in range(5)] == ['o2'] * 5


def test_a_mixed_service_answers_callers_of_both_kinds(story):
    """The migration the feature exists for: one oslo.messaging and one
    rpcmq server on a topic, called in turn by both kinds of client."""
    story.oslo_server('o1')
    story.rpcmq_servers('r1')
    oslo, ours = story.oslo_client(), story.rpcmq_client()
    answers = set()
    for _ in range(10):
        answers.add(ok(oslo.call('whoami')))
        answers.add(ours.call({}, 'whoami'))
    assert answers == {'o1', 'r1'}


def test_a_slow_oslo_method_returns_its_result_not_a_heartbeat(story):
    """oslo.messaging servers send heartbeat replies (no result) while a
    call runs if its _timeout (their call-monitor timeout) is set: rpcmq
    sent the call's timeout there and took the first heartbeat for the
    result (None)."""
    story.oslo_server('o1')
    client = story.rpcmq_client(timeout=4)
    assert client.call({}, 'sleep', seconds=3) == 3


def test_an_oslo_call_monitor_hears_heartbeats_from_a_slow_rpcmq_method(
        story):
    """An oslo.messaging caller with a call-monitor timeout (Nova's long
    calls have one) waits as long as the server says, every half of it,
    that the call still runs. Before, rpcmq sent no heartbeat and the
    caller gave up after the monitor's 2 s."""
    story.rpcmq_servers('r1')
    monitored = story.oslo_client('--call-monitor-timeout', '2')
    assert monitored.call('sleep', seconds=5) == {'ok': True, 'result': 5}
    assert monitored.call('add', a=1, b=2) == {'ok': True, 'result': 3}


# -- notifications, both ways -------------------------------------------------

class Notes:
    """A notification endpoint that keeps what it got."""

    def __init__(self):
        self._changed = threading.Condition()
        self.got = []

    def _got(self, priority, ctxt, publisher_id, event_type, payload, meta):
        with self._changed:
            self.got.append((priority, ctxt, publisher_id, event_type,
                             payload))
            self._changed.notify_all()

    def info(self, *args):
        self._got('info', *args)

    def error(self, *args):
        self._got('error', *args)

    def wait(self, count, timeout=30):
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.got) >= count,
                                          timeout), self.got
            return list(self.got)


def test_an_rpcmq_listener_reads_oslo_notifications(story):
    notes = Notes()
    story.rpcmq_listener(notes)
    notifier = story.oslo_notifier()
    # (oslo.messaging's notifier drops a context given as a plain dict)
    assert notifier.request_note('volume.create', {'id': 7}, 'info',
                                 {'user': 'alice'}) == {'ok': True}
    assert notifier.request_note('volume.fail', {'id': 8}, 'error') == \
        {'ok': True}
    got = sorted(notes.wait(2))
    assert got == [
        ('error', {}, 'oslopeer', 'volume.fail', {'id': 8}),
        ('info', {}, 'oslopeer', 'volume.create', {'id': 7})]


def test_an_oslo_listener_reads_rpcmq_notifications(story):
    listener = story.oslo_listener()
    story.rpcmq_notifier().notify({'user': 'bob'}, 'image.stored',
                                  {'key': 'a.jpg'}, 'info')
    note = json.loads(listener.readline(30, 'a notification'))
    assert note == {'priority': 'info', 'event_type': 'image.stored',
                    'payload': {'key': 'a.jpg'},
                    'publisher_id': 'rpcmq-test', 'context': note['context']}
    assert note['context'].get('user') == 'bob'


def test_pooled_listeners_of_both_kinds_share_the_events(story):
    notes = Notes()
    story.rpcmq_listener(notes, pool='pool_' + story.topic)
    oslo = story.oslo_listener('--pool', 'pool_' + story.topic)
    notifier = story.rpcmq_notifier()
    for n in range(10):
        notifier.notify({}, 'tick', {'n': n}, 'info')
    theirs = []

    def all_in():
        theirs.extend(json.loads(line) for line in oslo.drain())
        return len(notes.got) + len(theirs) >= 10
    assert wait_for(all_in, timeout=30), (notes.got, theirs)
    ours = notes.got
    seen = sorted([payload['n'] for *_, payload in ours] +
                  [note['payload']['n'] for note in theirs])
    assert seen == list(range(10)), (ours, theirs)
    assert ours and theirs, 'one pool member got every event'


@pytest.mark.parametrize('executor', ['eventlet', 'threading'])
def test_an_rpcmq_server_daemon_serves_oslo_callers(story, executor):
    """The daemon as deployed (eventlet by default): results, casts, an
    error, a version it does not have and a call that outlives its
    caller's timeout."""
    story.rpcmq_daemon('d1', executor)
    oslo = story.oslo_client()
    assert oslo.call('echo', x=[1, {'a': 'b'}]) == {'ok': True,
                                                    'result': [1, {'a': 'b'}]}
    base = ok(oslo.call('count'))
    for _ in range(5):
        oslo.cast('bump')
    assert wait_for(lambda: ok(oslo.call('count')) == base + 5, timeout=30)
    failed = oslo.call('fail', message='quota exceeded')
    assert not failed['ok'] and failed['type'] == 'RuntimeError', failed
    assert 'quota exceeded' in failed['message']
    newer = story.oslo_client('--version', '2.0').call('echo', x=1)
    assert not newer['ok'] and newer.get('exc_type') == 'UnsupportedVersion', \
        newer
    late = story.oslo_client('--timeout', '1').call('sleep', seconds=3)
    assert not late['ok'] and late['type'] == 'MessagingTimeout', late
    monitored = story.oslo_client('--call-monitor-timeout', '2')
    assert monitored.call('sleep', seconds=5) == {'ok': True, 'result': 'd1'}
    assert ok(oslo.call('echo', x='still serving')) == 'still serving'
