"""Delivery you can trust, on the real RabbitMQ: a hostile message, a busy
server, an expired call and a dead server each cost only what they must."""

import base64
import json
import subprocess
import threading
import time
import uuid

import amqp
import kombu
import pytest

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.cleanup import delete_entities
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.scenarios.rpc import Env, raw_call, wait_for

NESTED = b'{"method":"echo","args":{"x":' + b'[' * 100000 + \
    b']' * 100000 + b'}}'


def start_daemon(rabbit_url, tmp_path, host, topic=None, **options):
    topic = topic or 'dlv_%s' % uuid.uuid4().hex[:8]
    values = {'transport_url': rabbit_url, 'endpoints': 'diag',
              'topic': topic, 'host': host, 'graceful_shutdown_timeout': 5}
    rabbit = options.pop('rabbit', {})
    # sleep, fail, bump and count drive these tests.
    diag = options.pop('diag', {'unsafe_methods': 'true'})
    values.update(options)
    conf = write_config(tmp_path / ('%s.conf' % host),
                        {'DEFAULT': values, 'rabbit': rabbit, 'diag': diag})
    daemon = Daemon('rpcmq-server', conf, tmp_path / ('%s.log' % host))
    daemon.topic = topic
    daemon.queues = [topic, '%s.%s' % (topic, host)]
    return daemon.start()


def serving(rabbit_url, tmp_path, daemons, host, **options):
    """A started daemon (see ``start_daemon``) and an Env calling its
    topic."""
    daemon = start_daemon(rabbit_url, tmp_path, host, **options)
    daemons.append(daemon)
    daemon.wait_for_log('rpcmq-server started')
    env = Env(rabbit_url)
    env.topic = daemon.topic
    return daemon, env


@pytest.fixture
def daemons(rabbit_url):
    started = []
    yield started
    for daemon in started:
        daemon.stop()
        delete_entities(rabbit_url, daemon.queues)


def test_a_nested_json_message_costs_only_itself(rabbit_url, tmp_path,
                                                 daemons):
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'nest-1')
    try:
        # 100,000 nested arrays, 200 KB: far under max_message_size.
        raw_call(env, NESTED, cast=True)
        reply = raw_call(env, NESTED)
        assert reply['failure']['type'] == 'MalformedMessage'
        # The server still listens: the next call is answered.
        assert env.client(timeout=10).call({}, 'echo', x=[1]) == [1]
    finally:
        env.close()
    assert 'stopped on an unexpected error' not in daemon.log()


def test_requests_and_replies_are_strict_json(rabbit_url, tmp_path,
                                              daemons):
    # Python's json reads NaN and Infinity, which are not JSON; a server
    # ran such a request and echoed them in a reply that a strict parser
    # (JavaScript, Go, PHP) cannot read.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'strict-1')

    def strict(reply):
        def refuse(constant):
            raise ValueError('%s is not JSON' % constant)
        return json.loads(json.dumps(reply), parse_constant=refuse)
    try:
        for body in (b'{"method": "echo", "args": {"x": NaN}}',
                     b'{"method": "echo", "args": {"x": -Infinity}}'):
            reply = strict(raw_call(env, body))
            assert reply['failure']['type'] == 'MalformedMessage'
            assert 'NaN' in reply['failure']['message'] or \
                'Infinity' in reply['failure']['message']
        # 1e400 is JSON, but Python reads it as infinity: no result can
        # carry it back.
        reply = strict(raw_call(env, b'{"method": "echo", '
                                     b'"args": {"x": 1e400}}'))
        assert 'not JSON' in reply['failure']['message']
        assert env.client(timeout=10).call({}, 'echo', x=1.5) == 1.5
    finally:
        env.close()


def test_a_lone_surrogate_is_refused_before_the_method_runs(rabbit_url,
                                                           tmp_path,
                                                           daemons):
    # JSON may escape half of a UTF-16 pair ("\ud800"); Python reads it
    # as a lone surrogate, which no UTF-8 reply can carry. The server ran
    # the method and failed only when writing its reply ("returned a
    # value that is not JSON"); a method with an effect had had it.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'surrogate-1')
    try:
        for body in (b'{"method": "echo", "args": {"x": "\\udfff"}}',
                     b'{"method": "bump", "args": {}, '
                     b'"context": {"user": "a\\ud800b"}}'):
            reply = raw_call(env, body)
            assert reply['failure']['type'] == 'MalformedMessage', reply
            assert 'lone UTF-16 surrogate' in reply['failure']['message']
        client = env.client(timeout=10)
        assert client.call({}, 'count') == 0  # bump never ran
        # A valid pair is one character, and welcome.
        assert raw_call(env, b'{"method": "echo", '
                             b'"args": {"x": "\\ud83d\\ude00"}}') == {
            'result': '\U0001f600'}
    finally:
        env.close()


def test_a_request_nobody_can_decode_costs_only_itself(rabbit_url, tmp_path,
                                                       daemons):
    # RabbitMQ passes on text properties that are not UTF-8; py-amqp
    # cannot decode them. One such
    # request made the server's listener reconnect, get it again and
    # loop for ever, running the casts queued behind it again each time.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'undecodable-1')
    try:
        with kombu.Connection(rabbit_url.replace('rabbit:', 'amqp:',
                                                  1)) as conn:
            channel = conn.default_channel
            for props in ({'correlation_id': b'\xff\xfe', 'reply_to': 'x'},
                          {'type': b'\xff'}):
                channel.basic_publish(amqp.Message(
                    b'{"method": "bump", "args": {}}',
                    content_type='application/json', **props),
                    exchange='', routing_key=daemon.topic)
        client = env.client(timeout=10)
        for _ in range(10):
            client.cast({}, 'bump')
        assert wait_for(lambda: client.call({}, 'count') >= 10, 20)
        assert wait_for(lambda: daemon.log().count('cannot be decoded') == 2,
                        10)
        assert client.call({}, 'count') == 10  # none ran twice
        assert _unacked(daemon.topic) == 0
    finally:
        env.close()
    assert 'stopped on an unexpected error' not in daemon.log()
    assert 'rejected it without requeue' in daemon.log()


# Direct reply-to addresses RabbitMQ 3.10 closes the publishing
# connection on (541 INTERNAL_ERROR): one that is not base64, and a
# well-formed pid on a node it does not run.
FORGED_REPLY_TO = [
    'amq.rabbitmq.reply-to.AAAA.x',
    'amq.rabbitmq.reply-to.%s.x' % base64.b64encode(
        b'\x83Xw\x0breply@12345' + bytes(12)).decode()]


def test_a_forged_reply_address_costs_only_its_own_reply(rabbit_url,
                                                         tmp_path, daemons):
    # A caller naming such an address in reply_to (signed or not: a
    # refused request is answered too) made the broker close the server's
    # reply connection, and the replies written on it at that moment to
    # other callers were lost.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'forged-1')
    answers, failures = [], []

    def caller(k):
        client = env.client(timeout=20)
        for i in range(10):
            try:
                answers.append(client.call({}, 'echo', x=k * 100 + i))
            except Exception as exc:  # recorded: the assertion shows it
                failures.append(exc)
    try:
        assert env.client(timeout=10).call({}, 'echo', x=0) == 0
        callers = [threading.Thread(target=caller, args=(k,))
                   for k in range(4)]
        [t.start() for t in callers]
        with kombu.Connection(rabbit_url.replace('rabbit:', 'amqp:',
                                                  1)) as conn:
            channel = conn.default_channel
            for n, address in enumerate(FORGED_REPLY_TO * 5):
                channel.basic_publish(amqp.Message(
                    b'{"method": "echo", "args": {"x": 1}}',
                    content_type='application/json', reply_to=address,
                    correlation_id='forged-%d' % n),
                    exchange='', routing_key=daemon.topic)
        [t.join(60) for t in callers]
        assert failures == []
        assert sorted(answers) == sorted(k * 100 + i for k in range(4)
                                         for i in range(10))
        assert wait_for(lambda: daemon.log().count(
            'refused the reply address') == 10, 10), daemon.log()
        # The server still answers, on the connection it had.
        assert env.client(timeout=10).call({}, 'echo', x=2) == 2
    finally:
        env.close()
    assert 'reply connection to' not in daemon.log()


def test_a_busy_server_keeps_its_heartbeats_and_answers_every_call(
        rabbit_url, tmp_path, daemons):
    # One worker, a 2 s heartbeat, three calls of 6 s: the later calls
    # wait in the broker while the server's connection stays alive.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'busy-1',
                          executor_thread_pool_size=1,
                          rabbit={'heartbeat_timeout_threshold': 2})
    answers, errors = [], []

    def call():
        try:
            answers.append(env.client(timeout=40).call(
                {}, 'sleep', seconds=6))
        except Exception as exc:  # recorded: the assertion shows it
            errors.append(exc)
    try:
        callers = [threading.Thread(target=call) for _ in range(3)]
        [t.start() for t in callers]
        [t.join(60) for t in callers]
    finally:
        env.close()
    assert errors == [] and answers == ['busy-1'] * 3
    assert 'unreachable' not in daemon.log()


class Gate(DiagEndpoint):
    """Holds workers until released; counts the calls that ran."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.holding = 0
        self.ran = []

    def hold(self, ctxt):
        with self._lock:
            self.holding += 1
        self.release.wait(30)
        return 'released'

    def short(self, ctxt, n):
        self.ran.append(n)
        return n


def test_calls_that_expired_while_every_worker_was_busy_never_run(
        rabbit_url):
    env = Env(rabbit_url)
    gate = Gate()
    env.executor = 'threading'
    workers = 4
    srv = rpcmq.get_rpc_server(env.transport, rpcmq.Target(
        topic=env.topic, server='gate-1'), [gate], executor='threading',
        executor_size=workers)
    srv.start()
    env.servers.append(srv)
    env.queues.add('%s.gate-1' % env.topic)
    held = []
    holders = [threading.Thread(target=lambda: held.append(
        env.client(timeout=40).call({}, 'hold'))) for _ in range(workers)]
    try:
        [t.start() for t in holders]
        assert wait_for(lambda: gate.holding == workers, 20)
        late = env.client(timeout=0.5)
        timeouts = 0
        for n in range(40):
            with pytest.raises(rpcmq.MessagingTimeout):
                late.call({}, 'short', n=n)
            timeouts += 1
        gate.release.set()
        [t.join(30) for t in holders]
        assert held == ['released'] * workers
        # A call sent now queues behind whatever is left of the 40: once it
        # is answered, none of them may have run.
        assert env.client(timeout=10).call({}, 'short', n=-1) == -1
    finally:
        gate.release.set()
        env.close()
    assert timeouts == 40 and gate.ran == [-1]


def test_a_server_drops_a_call_whose_deadline_passed(rabbit_url, caplog):
    # The deadline travels in a header: a server that gets the request
    # after it (here: published already late) drops it without running.
    env = Env(rabbit_url)
    gate = Gate()
    env.serve([gate])
    caplog.set_level('INFO', logger='rpcmq.rpc.server')
    try:
        reply_q = 'plain_%s' % uuid.uuid4().hex
        with kombu.Connection('amqp://guest:guest@127.0.0.1:5672//') as conn:
            kombu.Queue(reply_q, exclusive=True,
                        auto_delete=True)(conn.default_channel).declare()
            conn.Producer().publish(
                json.dumps({'method': 'short', 'args': {'n': 1}}),
                exchange='', routing_key=env.topic, reply_to=reply_q,
                correlation_id='late-1', content_type='application/json',
                headers={'x-rpcmq-deadline':
                         int((time.time() - 5) * 1000)})
        assert env.client().call({}, 'short', n=2) == 2
        assert wait_for(lambda: 'late-1' in caplog.text)
    finally:
        env.close()
    assert gate.ran == [2]
    assert 'deadline passed' in caplog.text


def test_a_call_whose_server_died_is_answered_not_run_again(
        rabbit_url, tmp_path, daemons):
    first = start_daemon(rabbit_url, tmp_path, 'dies-1',
                         executor='threading')
    daemons.append(first)
    first.wait_for_log('rpcmq-server started')
    env = Env(rabbit_url)
    env.topic = first.topic
    outcome = []

    def call():
        try:
            outcome.append(env.client(timeout=60).call(
                {}, 'sleep', seconds=30))
        except Exception as exc:
            outcome.append(exc)
    caller = threading.Thread(target=call)
    try:
        caller.start()
        assert wait_for(lambda: _unacked(first.topic) == 1, 20)
        first.kill()  # mid-call: the broker requeues the request
        second = start_daemon(rabbit_url, tmp_path, 'takes-over',
                              topic=first.topic, executor='threading')
        daemons.append(second)
        caller.join(40)
    finally:
        env.close()
    [error] = outcome
    assert isinstance(error, rpcmq.CallInterrupted), error
    assert 'may or may not have run' in str(error)
    assert 'delivered again' in second.log()


def _unacked(queue):
    """Messages of ``queue`` delivered to a consumer and not yet acked."""
    out = subprocess.run(['rabbitmqctl', '-q', 'list_queues', 'name',
                          'messages_unacknowledged'], capture_output=True,
                         text=True, timeout=60).stdout
    for line in out.splitlines():
        name, _, count = line.partition('\t')
        if name == queue:
            return int(count)
    return 0


def test_acks_written_together_never_cover_a_call_still_running(
        rabbit_url, tmp_path, daemons):
    # A server writes the acks of casts that finish together as one
    # frame (transport/acks.py). A call taken before them and still
    # running must stay unacked: killed now, the broker must hand it out
    # again, and nothing else.
    daemon, env = serving(rabbit_url, tmp_path, daemons, 'acks-1')
    caller = threading.Thread(target=lambda: _ignore_errors(
        env.client(timeout=60).call, {}, 'sleep', seconds=30), daemon=True)
    try:
        caller.start()
        assert wait_for(lambda: _unacked(daemon.topic) == 1, 20)
        client = env.client(timeout=20)
        for _ in range(300):
            client.cast({}, 'bump')
        assert wait_for(lambda: client.call({}, 'count') >= 300, 30)
        assert wait_for(lambda: _unacked(daemon.topic) == 1, 20)
        daemon.kill()
        # The broker hands the call back once it has seen the connection
        # go, a moment after the process is gone.
        assert wait_for(lambda: _unacked(daemon.topic) == 0, 20)
        with kombu.Connection(rabbit_url.replace('rabbit:', 'amqp:',
                                                  1)) as conn:
            ready = kombu.Queue(daemon.topic)(conn.default_channel).\
                queue_declare(passive=True).message_count
        assert ready == 1  # the call; every cast was acked
    finally:
        env.close()


def _ignore_errors(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except rpcmq.RpcmqError:  # the server is killed under this call
        pass
