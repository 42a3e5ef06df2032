import json

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
