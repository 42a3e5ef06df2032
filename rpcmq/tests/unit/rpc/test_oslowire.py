"""oslo.messaging's envelope, as an rpcmq server in oslo_compat mode reads
and answers it (the bodies are what oslo.messaging 18 writes)."""

import json

import pytest

from rpcmq.exceptions import (
    MalformedMessage,
    NoSuchMethod,
    RemoteError,
    UnsupportedVersion,
)
from rpcmq.rpc import oslowire, wire


def envelope(inner, version='2.0'):
    return json.dumps({'oslo.version': version,
                       'oslo.message': json.dumps(inner)}).encode()


CALL = {'method': 'add', 'args': {'a': 2, 'b': 3}, 'namespace': None,
        '_context_user': 'alice', '_context_project_id': 'p1',
        '_msg_id': 'ab12', '_reply_q': 'reply_9f', '_timeout': None,
        '_unique_id': 'u1'}


class FakeIncoming:
    def __init__(self, body):
        self.body = body
        self.refused = None
        self.replies = []

    def refuse(self, reason):
        self.refused = reason

    def reply(self, body, headers=None, to=None, correlation_id=None):
        self.replies.append((body, to, correlation_id))


def test_an_oslo_call_reads_as_a_call_with_its_context():
    msg, msg_id, reply_q, unique_id, _ = oslowire.decode_request(
        envelope(CALL))
    assert msg == {'method': 'add', 'args': {'a': 2, 'b': 3},
                   'namespace': None, 'version': '1.0',
                   'context': {'user': 'alice', 'project_id': 'p1'}}
    assert (msg_id, reply_q, unique_id) == ('ab12', 'reply_9f', 'u1')


def test_an_oslo_cast_has_no_reply_queue():
    cast = {'method': 'bump', 'args': {}, 'version': '1.3',
            '_unique_id': 'u2'}
    msg, msg_id, reply_q, _, _ = oslowire.decode_request(envelope(cast))
    assert (msg['version'], msg_id, reply_q) == ('1.3', None, None)


@pytest.mark.parametrize('body, says', [
    (envelope(CALL, version='1.0'), 'is not 2.x'),
    (json.dumps({'oslo.version': '2.0', 'oslo.message': {}}).encode(),
     'must be JSON text'),
    (envelope(dict(CALL, _msg_id='x', _reply_q=None)), 'both _msg_id'),
    (envelope(dict(CALL, method='')), '"method"'),
    (json.dumps({'oslo.version': '2.0',
                 'oslo.message': '[' * 100000 + ']' * 100000}).encode(),
     'nested too deeply'),
])
def test_a_malformed_envelope_says_what_is_wrong(body, says):
    with pytest.raises(MalformedMessage, match=says):
        oslowire.decode_request(body)


def test_results_and_failures_leave_in_oslo_messagings_form():
    ok = json.loads(json.loads(oslowire.reply('ab12', wire.result_reply(5)))
                    ['oslo.message'])
    assert ok['result'] == 5 and ok['failure'] is None
    assert ok['ending'] is True and ok['_msg_id'] == 'ab12'
    assert ok['_unique_id']

    bad = json.loads(json.loads(oslowire.reply(
        'ab12', wire.failure_reply(ValueError('boom'), tb='Traceback\nx\n')))
        ['oslo.message'])
    failure = json.loads(bad['failure'])
    assert failure == {'class': 'ValueError', 'module': 'builtins',
                       'message': 'boom', 'tb': ['Traceback\n', 'x\n'],
                       'args': ['boom'], 'kwargs': {}}


def test_an_unknown_method_has_oslo_messagings_name():
    body = wire.failure_reply(NoSuchMethod(method='nope', namespace=None),
                              tb='')
    inner = json.loads(json.loads(oslowire.reply('m', body))['oslo.message'])
    failure = json.loads(inner['failure'])
    assert (failure['module'], failure['class'], failure['args']) == (
        'oslo_messaging.rpc.dispatcher', 'NoSuchMethod', ['nope'])


def test_a_request_sent_twice_runs_once_and_rpcmq_requests_pass():
    requests = oslowire.OsloRequests('t', max_size=1 << 20)
    first = requests.adapt(FakeIncoming(envelope(CALL)))
    assert (first.reply_to, first.correlation_id) == ('reply_9f', 'ab12')
    assert requests.adapt(FakeIncoming(envelope(CALL))) is None
    native = FakeIncoming(b'{"method": "add", "args": {}}')
    assert requests.adapt(native) is native


def test_a_reply_goes_to_the_reply_queue_in_an_envelope():
    incoming = FakeIncoming(envelope(CALL))
    request = oslowire.OsloRequests('t', 1 << 20).adapt(incoming)
    request.reply(request.reply_body(wire.result_reply({'sum': 5})))
    body, to, correlation_id = incoming.replies[0]
    assert (to, correlation_id) == ('reply_9f', 'ab12')
    assert json.loads(json.loads(body)['oslo.message'])['result'] == {
        'sum': 5}


def test_a_malformed_or_oversized_envelope_is_refused():
    requests = oslowire.OsloRequests('t', max_size=400)
    bad = FakeIncoming(envelope(dict(CALL, args=[1])))
    assert requests.adapt(bad) is None and 'MalformedMessage' in bad.refused
    big = FakeIncoming(envelope(dict(CALL, args={'x': 'y' * 500})))
    assert requests.adapt(big) is None and 'MessageTooLarge' in big.refused


def test_an_rpcmq_call_goes_out_as_oslo_messaging_sends_one():
    msg = {'method': 'add', 'args': {'a': 1}, 'context': {'user': 'bob'},
           'version': '1.2'}
    inner = json.loads(json.loads(oslowire.encode_request(
        msg, 'id7', 'rpcmq_reply_x'))['oslo.message'])
    assert inner.pop('_unique_id')
    assert inner == {'method': 'add', 'args': {'a': 1}, 'version': '1.2',
                     '_context_user': 'bob', '_msg_id': 'id7',
                     '_reply_q': 'rpcmq_reply_x', '_timeout': None}
    # and an rpcmq server in oslo_compat mode reads it back
    back, msg_id, reply_q, _, _ = oslowire.decode_request(
        oslowire.encode_request(msg, 'id7', 'rpcmq_reply_x'))
    assert back == dict(msg, namespace=None)
    assert (msg_id, reply_q) == ('id7', 'rpcmq_reply_x')


def oslo_reply(**inner):
    return envelope(dict({'failure': None, 'ending': True, '_msg_id': 'm',
                          '_unique_id': 'u'}, **inner))


def test_oslo_messaging_replies_are_read_with_their_failures_rebuilt():
    assert oslowire.decode_reply(oslo_reply(result=[1, 2])) == [1, 2]
    failure = json.dumps({'class': 'ValueError', 'module': 'builtins',
                          'message': 'boom', 'tb': ['Traceback\n'],
                          'args': ['boom'], 'kwargs': {}})
    with pytest.raises(ValueError, match='boom') as raised:
        oslowire.decode_reply(oslo_reply(result=None, failure=failure))
    assert raised.value.remote_traceback == 'Traceback\n'
    nosuch = json.dumps({'class': 'NoSuchMethod',
                         'module': 'oslo_messaging.rpc.dispatcher',
                         'message': 'Endpoint does not support RPC method x',
                         'tb': [], 'args': ['x'], 'kwargs': {}})
    with pytest.raises(NoSuchMethod) as raised:
        oslowire.decode_reply(oslo_reply(failure=nosuch))
    assert raised.value.kwargs['method'] == 'x'
    version = json.dumps({
        'class': 'UnsupportedVersion',
        'module': 'oslo_messaging.rpc.dispatcher',
        'message': 'Endpoint does not support RPC version 2.1. Attempted '
                   'method: add', 'tb': [], 'args': [], 'kwargs': {}})
    with pytest.raises(UnsupportedVersion) as raised:
        oslowire.decode_reply(oslo_reply(failure=version))
    assert (raised.value.kwargs['version'],
            raised.value.kwargs['method']) == ('2.1', 'add')
    # A module the caller did not allow is never imported.
    foreign = json.dumps({'class': 'Boom', 'module': 'rpcmq.cmd.server',
                          'message': 'no', 'tb': [], 'args': [],
                          'kwargs': {}})
    with pytest.raises(RemoteError, match='rpcmq.cmd.server.Boom'):
        oslowire.decode_reply(oslo_reply(failure=foreign))
    # rpcmq's own replies read as ever
    assert oslowire.decode_reply(wire.result_reply(3)) == 3


def test_the_allowed_modules_are_read_only_for_an_oslo_failure():
    asked = []

    def allowed():
        asked.append(1)
        return ['builtins']
    assert oslowire.decode_reply(oslo_reply(result=5), allowed) == 5
    assert asked == []
    failure = json.dumps({'class': 'ValueError', 'module': 'builtins',
                          'message': 'boom', 'tb': [], 'args': ['boom'],
                          'kwargs': {}})
    with pytest.raises(ValueError, match='boom'):
        oslowire.decode_reply(oslo_reply(failure=failure), allowed)
    assert asked == [1]


@pytest.mark.parametrize('client_timeout, interval', [
    (None, None), (60, 30.0), (3, 1.5), ('7', 3.5), (2.9, 1.0), (1, None),
    (0, None), (-4, None), ('soon', None), ([1], None)])
def test_heartbeats_come_every_half_of_the_callers_monitor_timeout(
        client_timeout, interval):
    """As oslo.messaging's servers: whole seconds, at least 2; anything
    else means no heartbeats (and a warning), never a failed call."""
    call = dict(CALL, _timeout=client_timeout)
    request = oslowire.OsloRequests('t', 1 << 20).adapt(
        FakeIncoming(envelope(call)))
    assert request.heartbeat_interval == interval
    cast = {k: v for k, v in call.items() if k not in ('_msg_id', '_reply_q')}
    request = oslowire.OsloRequests('t', 1 << 20).adapt(
        FakeIncoming(envelope(cast)))
    assert request.heartbeat_interval is None  # nobody waits for a cast


def test_a_heartbeat_is_a_reply_that_is_not_the_end():
    inner = json.loads(json.loads(oslowire.heartbeat('ab12'))['oslo.message'])
    assert inner['result'] is None and inner['failure'] is None
    assert inner['ending'] is False and inner['_msg_id'] == 'ab12'
    assert inner['_unique_id']
