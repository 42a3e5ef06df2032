"""Signed messages: the test vector, every refusal, scopes and rotation."""

import threading

import pytest

import rpcmq
from rpcmq.exceptions import ConfigError, Unauthenticated
from rpcmq.security.signing import Key, Keyring, string_to_sign
from rpcmq.testing.server import InProcessServer, make_conf

SECRET = 'an-example-secret-of-32-bytes!!!'
BODY = b'{"method":"ping","args":{},"context":{}}'


def test_the_documented_test_vector():
    # docs/wire-format.md, "Signed messages": a client in any language
    # must reproduce this signature.
    import hashlib
    import hmac
    text = string_to_sign('request', 'rpcmq', 'image', 'c-1', 1700000030000,
                          1700000000000, '00112233445566778899aabbccddeeff',
                          BODY)
    assert text == (
        b'rpcmq-sig-v1\nrequest\nrpcmq\nimage\nc-1\n1700000030000\n'
        b'1700000000000\n00112233445566778899aabbccddeeff\n'
        b'cae882d208e05dafd81bc9e3a8ce582a2189c7431bf3ba96131be3847ef551bc')
    assert hmac.new(SECRET.encode(), text, hashlib.sha256).hexdigest() == \
        '9de4b922070bd6064fea9522e3ede93a9db9acecd8c0a8a08c0fa94c7193d92f'


def ring(*entries, **kwargs):
    return Keyring([Key.parse(e) for e in entries], **kwargs)


def signed(keyring, body=BODY, **where):
    where = dict({'exchange': 'rpcmq', 'routing_key': 'image',
                  'correlation_id': 'c-1', 'deadline': None}, **where)
    return keyring.sign('request', where['exchange'], where['routing_key'],
                        body, where['correlation_id'], where['deadline'])


def check(keyring, headers, body=BODY, topic='image', **where):
    where = dict({'exchange': 'rpcmq', 'routing_key': 'image',
                  'correlation_id': 'c-1', 'deadline': None}, **where)
    return keyring.verify('request', headers, where['exchange'],
                          where['routing_key'], body,
                          where['correlation_id'], where['deadline'],
                          topic=topic)


@pytest.mark.parametrize('tamper, reason', [
    (lambda h: {}, 'not signed'),
    (lambda h: {'x-rpcmq-sig': 'who' + h['x-rpcmq-sig'][2:]},
     'unknown key'),
    (lambda h: {'x-rpcmq-sig': h['x-rpcmq-sig'][:-64] + '0' * 64},
     'does not match'),
    (lambda h: {'x-rpcmq-sig': 'k1 soon n s'}, 'malformed'),
    (lambda h: {'x-rpcmq-sig': 17}, 'malformed'),
])
def test_each_refusal_says_what_was_wrong(tamper, reason):
    keys = ring('k1:' + SECRET)
    headers = tamper(signed(keys))
    with pytest.raises(Unauthenticated, match=reason) as info:
        check(keys, headers)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize('change', [
    {'body': BODY.replace(b'ping', b'pong')},
    {'routing_key': 'image.host-2'},
    {'exchange': 'other'},
    {'correlation_id': 'c-2'},
    {'deadline': 1},
])
def test_anything_that_decides_what_runs_is_covered(change):
    keys = ring('k1:' + SECRET)
    headers = signed(keys)
    with pytest.raises(Unauthenticated, match='does not match'):
        check(keys, headers, **change)


def test_a_message_signed_long_ago_is_refused(monkeypatch):
    from rpcmq.security import signing
    keys = ring('k1:' + SECRET)
    real_time = signing.time.time
    monkeypatch.setattr(signing.time, 'time', lambda: real_time() - 3600)
    headers = signed(keys)   # validly signed, an hour ago
    monkeypatch.setattr(signing.time, 'time', real_time)
    with pytest.raises(Unauthenticated, match='max_clock_skew'):
        check(keys, headers)


def test_a_replayed_message_is_refused():
    keys = ring('k1:' + SECRET)
    headers = signed(keys)
    assert check(keys, headers).key_id == 'k1'
    with pytest.raises(Unauthenticated, match='replay'):
        check(keys, headers)


def test_a_key_limited_to_a_topic_and_methods():
    bridge = Key.parse('bridge:%s@conductor' % SECRET)
    ops = Key.parse('ops:%s@image/fetch+image/store+thumbs.*' % SECRET)
    assert bridge.allows('conductor') and not bridge.allows('image')
    assert ops.allows('image', 'fetch') and not ops.allows('image',
                                                           'transfer')
    assert ops.allows('thumbs.small', 'anything')
    keys = Keyring([bridge])
    with pytest.raises(Unauthenticated, match='may not call topic image'):
        check(keys, signed(keys), topic='image')


@pytest.mark.parametrize('entry, problem', [
    ('nocolon', 'key_id:secret'),
    ('k1:short', 'shorter than 16 bytes'),
])
def test_bad_key_entries_are_config_errors(entry, problem):
    with pytest.raises(ConfigError, match=problem):
        Key.parse(entry)


def test_require_signed_needs_a_key_and_the_signing_key_must_exist():
    with pytest.raises(ConfigError, match='signing_keys is empty'):
        Keyring([], require_signed=True)
    with pytest.raises(ConfigError, match='not one of signing_keys'):
        ring('k1:' + SECRET, signing_key_id='k2')


# -- end to end on memory:// --------------------------------------------

class Counter:
    def __init__(self):
        self.runs = 0
        self.lock = threading.Lock()

    def bump(self, ctxt):
        with self.lock:
            self.runs += 1
        return self.runs


def conf_with(keys, key_id='', require=True, **more):
    overrides = {'security.signing_keys': keys,
                 'security.signing_key_id': key_id,
                 'security.require_signed': require}
    overrides.update(more)
    return make_conf(**overrides)


def test_signed_calls_and_casts_run_and_their_replies_are_signed():
    keys = ['k1:' + SECRET]
    counter = Counter()
    with InProcessServer([counter], conf=conf_with(keys)) as srv:
        assert srv.client.call({}, 'bump') == 1
        srv.client.cast({}, 'bump')
        assert srv.client.call({}, 'bump') == 3


def test_an_unsigned_client_is_refused_and_nothing_runs():
    counter = Counter()
    with InProcessServer([counter], conf=conf_with(['k1:' + SECRET])) as srv:
        plain = rpcmq.get_transport(make_conf(), url='memory://')
        try:
            client = rpcmq.RPCClient(plain, srv.client.target, timeout=5)
            with pytest.raises(Unauthenticated, match='not signed'):
                client.call({}, 'bump')
            client.cast({}, 'bump')
        finally:
            plain.cleanup()
        assert srv.client.call({}, 'bump') == 1  # the cast never ran


def test_keys_rotate_without_restarting_callers():
    old, new = 'old:' + SECRET, 'new:' + SECRET.upper()
    counter = Counter()
    # The server accepts both keys while callers move from old to new.
    with InProcessServer([counter], conf=conf_with([old, new])) as srv:
        for signing in ([old], [new, old]):
            caller = rpcmq.get_transport(conf_with(signing, require=False),
                                         url='memory://')
            try:
                client = rpcmq.RPCClient(caller, srv.client.target,
                                         timeout=5)
                assert client.call({}, 'bump') >= 1
            finally:
                caller.cleanup()


class Events:
    def __init__(self):
        self.got = []
        self.arrived = threading.Event()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.got.append((publisher_id, payload))
        self.arrived.set()


def test_a_listener_that_requires_signatures_drops_unsigned_events(caplog):
    keys = ['k1:' + SECRET]
    listening = rpcmq.get_transport(conf_with(keys), url='memory://')
    signed_t = rpcmq.get_transport(conf_with(keys, require=False),
                                   url='memory://')
    plain_t = rpcmq.get_transport(make_conf(), url='memory://')
    events = Events()
    listener = rpcmq.get_notification_listener(
        listening, [rpcmq.Target(topic='batch.*')], [events])
    listener.start()
    try:
        assert listener.ready.wait(10)
        with caplog.at_level('WARNING', logger='rpcmq.notify.listener'):
            rpcmq.Notifier(plain_t, 'forger').info({}, 'batch.end', {'n': 1})
            rpcmq.Notifier(signed_t, 'conductor').info({}, 'batch.end',
                                                       {'n': 2})
            assert events.arrived.wait(10)
    finally:
        listener.stop()
        listener.wait(10)
        for t in (listening, signed_t, plain_t):
            t.cleanup()
    assert events.got == [('conductor', {'n': 2})]
    assert 'not signed' in caplog.text


def test_a_forked_child_never_reuses_its_parents_nonces():
    import os

    from rpcmq.security import signing
    parent = signing._new_nonce()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, signing._new_nonce().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == len(parent) == 32
    assert child[:16] != parent[:16]
