import json
import os
import subprocess
import sys

import pytest

from rpcmq import exceptions
from rpcmq.rpc import wire


def _roundtrip(exc, allowed=()):
    try:
        raise exc
    except Exception as caught:
        body = wire.failure_reply(caught)
    json.loads(body)  # plain JSON, readable by any client
    with pytest.raises(Exception) as err:
        wire.decode_reply(body, allowed)
    return err.value


def test_builtin_errors_keep_their_type_and_traceback():
    err = _roundtrip(KeyError('missing'))
    assert type(err) is KeyError and err.args == ('missing',)
    assert 'KeyError' in err.remote_traceback


def test_rpcmq_errors_keep_their_fields():
    err = _roundtrip(exceptions.MessageTooLarge(size=10, limit=5))
    assert type(err) is exceptions.MessageTooLarge
    assert err.size == 10 and err.limit == 5
    assert '10 bytes' in str(err)


class AppError(Exception):
    pass


def test_unlisted_module_arrives_as_remote_error():
    err = _roundtrip(AppError('no disk'))
    assert isinstance(err, exceptions.RemoteError)
    assert err.exc_type.endswith('test_wire.AppError')
    assert err.value == 'no disk'
    assert 'Traceback' in err.traceback


def test_allowed_module_is_rebuilt():
    err = _roundtrip(AppError('no disk'), allowed=[__name__])
    assert type(err) is AppError and str(err) == 'no disk'


def test_unjsonable_args_still_produce_a_reply():
    err = _roundtrip(ValueError(object()))
    assert type(err) is ValueError and 'object' in str(err)


@pytest.mark.parametrize('body, reason', [
    (b'\xff\xfe', 'not JSON'),
    (b'not json', 'not JSON'),
    (b'[1, 2]', 'JSON object'),
    (b'{"args": {}}', '"method"'),
    (b'{"method": "x", "args": [1]}', '"args"'),
    (b'{"method": "x", "version": 2}', '"version"'),
    (b'{"method": "x", "context": "c"}', '"context"'),
])
def test_malformed_requests_are_named(body, reason):
    with pytest.raises(exceptions.MalformedMessage) as err:
        wire.decode_request(body)
    assert reason in str(err.value)


def test_minimal_request_gets_defaults():
    msg = wire.decode_request(b'{"method": "ping"}')
    assert msg['args'] == {} and msg['context'] == {}


# -- what a hostile or broken peer sends ------------------------------------

def _nested(depth, leaf=b'1'):
    """A JSON value of ``depth`` nested arrays around ``leaf``."""
    return b'[' * depth + leaf + b']' * depth


def _request(args_json):
    return b'{"method":"echo","args":{"x":' + args_json + b'}}'


def test_a_deeply_nested_request_is_refused_not_a_crash():
    # 200 KB of brackets: json.loads alone would raise RecursionError.
    body = _request(_nested(100000))
    with pytest.raises(exceptions.MalformedMessage) as err:
        wire.decode_request(body)
    assert 'nested too deeply' in str(err.value)


def test_a_deeply_nested_reply_is_refused_not_a_crash():
    for body in (b'{"result":' + _nested(100000) + b'}',
                 b'{"failure":{"message":' + _nested(100000) + b'}}'):
        with pytest.raises(exceptions.MalformedMessage) as err:
            wire.decode_reply(body)
        assert 'nested too deeply' in str(err.value)


@pytest.mark.parametrize('body', [
    _request(b'"\\ud800"'),
    _request(b'"ok \\uDFFF"'),
    _request(b'"\\udc00\\ud800"'),
    _request(b'{"\\ud83d": 1}'),
    _request(b'[["a", "\\ud800b"]]'),
    b'{"method":"echo\\ud800","args":{}}',
    b'{"method":"echo","context":{"user":"\\udbff"}}',
    _request(b'"\\ud800"').decode().encode('utf-16'),
    _request(b'"\\ud800"').decode(),
    '{"method":"echo","args":{"x":"\ud800"}}',
], ids=['lone-high', 'lone-low', 'pair-reversed', 'in-a-key',
        'deep-in-a-list', 'in-the-method', 'in-the-context',
        'utf-16-body', 'str-body', 'str-body-unescaped'])
def test_lone_surrogates_are_refused_wherever_they_hide(body):
    with pytest.raises(exceptions.MalformedMessage) as err:
        wire.decode_request(body)
    assert 'surrogate' in str(err.value)


def test_a_surrogate_pair_is_one_character_but_half_a_pair_is_refused():
    # An emoji escaped as a UTF-16 pair is one character, and the method's
    # reply can carry it back.
    msg = wire.decode_request(_request(b'"\\ud83d\\ude00"'))
    assert msg['args']['x'] == '\U0001F600'
    assert json.loads(wire.result_reply(msg['args']['x']))['result'] == \
        '\U0001F600'
    # An escaped backslash before "ud800" is six characters of text.
    msg = wire.decode_request(_request(b'"\\\\ud800"'))
    assert msg['args']['x'] == '\\ud800'
    # Half the pair is not a character: refused before any method runs.
    with pytest.raises(exceptions.MalformedMessage) as err:
        wire.decode_request(_request(b'"\\ud83d"'))
    assert 'lone UTF-16 surrogate' in str(err.value)


def _failure(module, name, **fields):
    return json.dumps({'failure': dict(
        {'module': module, 'type': name, 'message': 'forged',
         'traceback': ''}, **fields)}).encode()


def test_errors_keep_their_type_only_from_rpcmq_error_modules():
    allowed = ['rpcmq', 'rpcmq.tests']
    for module, name in [('rpcmq.exceptions', 'MessageTooLarge'),
                         ('rpcmq.fetch.errors', 'NotAnImage'),
                         ('rpcmq.storage.errors', 'NoSuchObject'),
                         ('rpcmq.conductor.errors', 'BatchNotFound')]:
        with pytest.raises(exceptions.RpcmqError) as err:
            wire.decode_reply(_failure(module, name, kwargs={'x': 1}),
                              allowed)
        assert type(err.value).__module__ == module
        assert type(err.value).__name__ == name and err.value.x == 1
    # rpcmq modules that merely import an error are not error modules, and
    # allowed_remote_exmods lists exact module names, not prefixes.
    for module, name in [('rpcmq.rpc.client', 'MessageTooLarge'),
                         ('rpcmq.rpc.wire', 'MalformedMessage'),
                         ('rpcmq.tests.unit.rpc.test_wire', 'AppError')]:
        with pytest.raises(exceptions.RemoteError) as err:
            wire.decode_reply(_failure(module, name), allowed)
        assert err.value.exc_type == '%s.%s' % (module, name)
        assert err.value.value == 'forged'


# Run in a fresh interpreter: importing rpcmq.cmd.server monkey-patches the
# whole process with eventlet, which would spoil this test process too.
FORGED_REPLY_SCRIPT = '''
import json, sys
import eventlet.patcher
from rpcmq.exceptions import RemoteError
from rpcmq.rpc import wire

body = json.dumps({"failure": {"module": "rpcmq.cmd.server", "type": "X",
                               "message": "forged", "traceback": ""}})
try:
    wire.decode_reply(body.encode())
except RemoteError as exc:
    raised = exc.exc_type
patched = eventlet.patcher.is_monkey_patched("socket")
print(json.dumps({"raised": raised, "monkey_patched": patched,
                  "imported": "rpcmq.cmd.server" in sys.modules}))
'''


def test_a_reply_naming_the_daemon_module_does_not_import_it():
    env = {k: v for k, v in os.environ.items() if k != 'RPCMQ_OS_THREADS'}
    proc = subprocess.run([sys.executable, '-c', FORGED_REPLY_SCRIPT],
                          capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome == {'raised': 'rpcmq.cmd.server.X',
                       'monkey_patched': False, 'imported': False}


def test_the_allowed_modules_may_be_read_only_for_a_failure():
    asked = []

    def allowed():
        asked.append(1)
        return ['rpcmq.fetch.errors']
    assert wire.decode_reply(wire.result_reply(7), allowed) == 7
    assert asked == []
    with pytest.raises(exceptions.RpcmqError) as err:
        wire.decode_reply(_failure('rpcmq.fetch.errors', 'NotAnImage'),
                          allowed)
    assert type(err.value).__name__ == 'NotAnImage' and asked == [1]


@pytest.mark.parametrize('constant', ['NaN', 'Infinity', '-Infinity'])
def test_a_request_with_a_number_json_has_not_is_refused(constant):
    body = '{"method": "echo", "args": {"x": %s}}' % constant
    for given in (body, body.encode(), body.encode('utf-16')):
        with pytest.raises(exceptions.MalformedMessage, match=constant):
            wire.decode_request(given)


def test_what_rpcmq_writes_is_strict_json():
    for value in (float('nan'), float('inf'), [1, {'x': -float('inf')}]):
        with pytest.raises(ValueError, match='not JSON'):
            wire.encode({'result': value})
    assert wire.decode_request(b'{"method": "m", "args": {"x": 1e3}}')[
        'args'] == {'x': 1000.0}


def test_only_a_nan_or_infinity_is_worded_as_one():
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match='Circular reference') as raised:
        wire.encode({'result': loop})
    assert 'NaN' not in str(raised.value)
