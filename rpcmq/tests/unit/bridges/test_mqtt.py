"""Messages of the MQTT bridge: parsing, keys, batch ids, manual acks."""

import hashlib
import json
import logging
import threading

import pytest

from rpcmq.bridges import common
from rpcmq.bridges.common import InvalidInput
from rpcmq.bridges.mqtt import (
    BatchTopics,
    MqttBridge,
    is_output_topic,
    parse_message,
    url_key,
)
from rpcmq.rpc import wire
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport

A = 'https://img.oss.com/works/12/a.jpg!preview'
B = 'https://img.oss.com/works/12/b.png'


def test_comma_list_as_the_sync_client_sends_it():
    batch_id, items = parse_message('sync', (A + ',' + B).encode())
    assert items == [{'url': A, 'key': 'works/12/a.jpg!preview'},
                     {'url': B, 'key': 'works/12/b.png'}]
    digest = hashlib.sha1(b'sync\n' + (A + ',' + B).encode()).hexdigest()
    assert batch_id == 'mqtt-' + digest


def test_batch_id_is_stable_per_topic_and_payload():
    one = parse_message('sync', A)[0]
    assert parse_message('sync', A)[0] == one
    assert parse_message('sync-single-work', A)[0] != one
    assert parse_message('sync', B)[0] != one


def test_comma_list_skips_blanks_and_repeats():
    _, items = parse_message('sync', ' %s , ,%s,%s, ' % (A, B, A))
    assert [i['url'] for i in items] == [A, B]


@pytest.mark.parametrize('mode,keys', [
    ('path', ['works/12/a.jpg', 'works/12/b.png']),
    ('host_path', ['img.oss.com/works/12/a.jpg',
                   'img.oss.com/works/12/b.png']),
    ('auto', [None, None]),
])
def test_key_modes(mode, keys):
    urls = ['http://img.oss.com/works/12/a.jpg', 'http://img.oss.com'
            '/works/12/b.png']
    _, items = parse_message('sync', ','.join(urls), key_mode=mode)
    assert [i.get('key') for i in items] == keys


def test_unusable_or_repeated_path_keys_fall_back_to_the_server():
    assert url_key('http://h/') is None
    assert url_key('http://h/a//b.jpg') is None
    assert url_key('http://h/a/../b.jpg') is None
    _, items = parse_message('sync', 'http://h/a.jpg?v=1,http://h/a.jpg?v=2')
    assert [i.get('key') for i in items] == ['a.jpg', None]


def test_json_forms():
    bid, items = parse_message('sync', json.dumps({
        'batch_id': 'work-12', 'items': [A, {'url': B, 'name': 'cover'},
                                          {'url': 'http://h/c.jpg',
                                           'key': 'c/1.jpg'}]}))
    assert bid == 'work-12'
    assert items == [{'url': A, 'key': 'works/12/a.jpg!preview'},
                     {'url': B, 'name': 'cover'},
                     {'url': 'http://h/c.jpg', 'key': 'c/1.jpg'}]
    bid, items = parse_message('sync', json.dumps([A]))
    assert bid.startswith('mqtt-') and items[0]['url'] == A


def test_explicit_keys_win_over_derived_ones():
    _, items = parse_message('sync', json.dumps(
        ['http://h/a.jpg', {'url': 'http://g/x.jpg', 'key': 'a.jpg'}]))
    assert items == [{'url': 'http://h/a.jpg'},
                     {'url': 'http://g/x.jpg', 'key': 'a.jpg'}]


@pytest.mark.parametrize('payload,reason', [
    (b'', 'empty payload'),
    (b'  \n', 'empty payload'),
    (b',,', 'no image URLs'),
    (b'\xff\xfe', 'not UTF-8'),
    (b'hello world', 'URL 0'),
    (('%s,ftp://h/a.jpg' % A).encode(), 'URL 1'),
    (b'{"items": [', 'bad JSON'),
    (b'{"items": "http://h/a.jpg"}', 'list of items'),
    (b'{"batch_id": "a/b", "items": ["http://h/a.jpg"]}', 'batch_id'),
    (b'[]', 'no image URLs'),
    (b'[1]', 'item 0 must be'),
    (b'[{"url": "http://h/a.jpg", "size": 1}]', 'unknown field(s) size'),
    (b'[{"name": "a"}]', 'item 0 url'),
])
def test_bad_payloads(payload, reason):
    with pytest.raises(InvalidInput) as err:
        parse_message('sync', payload)
    assert reason in err.value.reason


def test_output_topics_are_recognised():
    templates = ('{topic}/progress', '{topic}/errors')
    assert is_output_topic('sync/progress', templates)
    assert is_output_topic('a/b/errors', templates)
    assert not is_output_topic('sync', templates)
    assert not is_output_topic('/progress', templates)
    assert is_output_topic('out/sync', ('out/{topic}',))


def test_batch_topics_remember_the_first_topic(tmp_path):
    state = BatchTopics(str(tmp_path / 'd' / 's.sqlite'), ttl=3600)
    state.add('b1', 'sync')
    state.add('b1', 'other')
    assert state.topic('b1') == 'sync' and state.topic('b2') is None
    state.close()
    state = BatchTopics(str(tmp_path / 'd' / 's.sqlite'), ttl=3600)
    assert state.topic('b1') == 'sync'
    state.close()


class FakeInfo:
    def is_published(self):
        return True

    def wait_for_publish(self, timeout=None):
        pass


class FakeClient:
    """What the bridge uses of paho's client; ``sent`` keeps what it
    publishes (``published``: the reports of the ``bridge`` fixture)."""

    def __init__(self):
        self.acks = []
        self.published = []
        self.sent = []

    def ack(self, mid, qos):
        self.acks.append((mid, qos))

    def is_connected(self):
        return True

    def publish(self, topic, payload, qos=0):
        if len(payload) > 268435455:
            raise ValueError('Payload too large.')
        self.sent.append((topic, json.loads(payload)))
        return FakeInfo()


@pytest.fixture
def bridge(tmp_path, monkeypatch):
    conf = make_conf(**{'mqtt_bridge.state_file': str(tmp_path / 's.db'),
                        'mqtt_bridge.retry_interval': 0.01})
    bridge = MqttBridge(conf, get_transport(conf, 'memory://'))
    bridge.client = FakeClient()
    bridge.submitted = []
    monkeypatch.setattr(bridge, 'report', lambda topic, payload, reason,
                        batch_id=None: bridge.client.published.append(
                            (topic, reason)))
    yield bridge
    bridge.state.close()


def run_once(bridge, *messages, submit=None):
    def fake_submit(batch_id, items):
        bridge.submitted.append((batch_id, items))
        if len(bridge.submitted) >= len(messages):
            bridge._stop.set()
        return submit(batch_id, items) if submit else True
    bridge.submit = fake_submit
    for message in messages:
        bridge._messages.put(message)
    bridge._run()


def test_message_acked_after_the_conductor_took_it(bridge):
    run_once(bridge, (0, 'sync', A.encode(), 7, 1))
    assert [b for b, _ in bridge.submitted] == [parse_message('sync', A)[0]]
    assert bridge.client.acks == [(7, 1)]
    assert bridge.state.topic(bridge.submitted[0][0]) == 'sync'


def test_not_acked_while_stopping_nor_across_reconnects(bridge):
    run_once(bridge, (0, 'sync', A.encode(), 7, 1),
             submit=lambda b, i: False)
    assert bridge.client.acks == []
    bridge._stop.clear()
    bridge._session = 1  # reconnected: mid 8 of session 0 is stale
    run_once(bridge, (0, 'sync', B.encode(), 8, 1))
    assert bridge.client.acks == []


def test_bad_message_reported_and_acked(bridge):
    bridge._messages.put((0, 'sync', b'hello', 3, 1))
    run_once(bridge, (0, 'sync', A.encode(), 4, 1))
    assert bridge.client.published == [('sync', 'URL 0 \'hello\' is not an '
                                        'http(s) URL with a host')]
    assert bridge.client.acks == [(3, 1), (4, 1)]


def test_own_progress_messages_are_skipped(bridge):
    bridge._messages.put((0, 'sync/progress', b'{"event": "x"}', 5, 1))
    run_once(bridge, (0, 'sync', A.encode(), 6, 1))
    assert len(bridge.submitted) == 1 and bridge.client.published == []
    assert bridge.client.acks == [(5, 1), (6, 1)]


# -- hostile messages and events: one never stops the bridge -------------

NESTED = b'[' * 100000 + b']' * 100000


@pytest.mark.parametrize('payload,reason', [
    (NESTED, 'bad JSON: nested too deeply'),
    (b'{"items": ' + NESTED + b'}', 'bad JSON: nested too deeply'),
    (json.dumps([{'url': A, 'key': ['x']}]).encode(),
     "item 0 key must be a UTF-8 string, not ['x']"),
    (json.dumps([{'url': A, 'name': {'a': 1}}]).encode(),
     "item 0 name must be a UTF-8 string, not {'a': 1}"),
    (b'["http://h/\\ud800.jpg"]', 'holds a lone UTF-16 surrogate'),
    (json.dumps([{'url': A, 'key': 'a\ud800.jpg'}]).encode(),
     "item 0 key must be a UTF-8 string, not 'a\\ud800.jpg'"),
])
def test_hostile_message_is_reported_and_acked(bridge, payload, reason):
    bridge._messages.put((0, 'sync', payload, 3, 1))
    run_once(bridge, (0, 'sync', A.encode(), 4, 1))
    assert [b for b, _ in bridge.submitted] == [parse_message('sync', A)[0]]
    (report,) = bridge.client.published
    assert report[0] == 'sync' and reason in report[1]
    assert bridge.client.acks == [(3, 1), (4, 1)]


def test_huge_message_is_reported_unread(bridge):
    huge = b'x' * (common.MAX_INPUT_BYTES + 1)
    bridge._messages.put((0, 'sync', huge, 3, 1))
    run_once(bridge, (0, 'sync', A.encode(), 4, 1))
    assert bridge.client.published == [('sync', (
        'the payload is %d bytes, more than the %d a bridge takes'
        % (len(huge), common.MAX_INPUT_BYTES)))]
    assert bridge.client.acks == [(3, 1), (4, 1)]


def test_unsendable_batch_is_refused_not_retried(bridge):
    """What the RPC client cannot encode is refused at once, not retried
    for ever (which would hold every message behind it)."""
    bridge.listener.ready.set()
    calls = []

    def api_submit(items, batch_id):  # encodes as the RPC client does
        calls.append(wire.encode({'items': items, 'batch_id': batch_id}))
    bridge.api.submit = api_submit
    outcome = []

    def submit():
        try:
            outcome.append(bridge.submit('b1', [{'url': 'http://h/\ud800'}]))
        except InvalidInput as exc:
            outcome.append(exc)

    worker = threading.Thread(target=submit, daemon=True)
    worker.start()
    worker.join(10)
    bridge._stop.set()  # ends a retry loop, if any
    worker.join(5)
    assert isinstance(outcome[0], InvalidInput), outcome
    assert 'cannot be sent' in outcome[0].reason and calls == []


def call_info(bridge, event_type, payload, timeout=10):
    """bridge.info() in a thread; True if it returned within timeout."""
    worker = threading.Thread(target=bridge.info, daemon=True, args=(
        {}, 'conductor', event_type, payload, {}))
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize('batch_id', ['\ud800', 'a\udfffb', 7,
                                      None, 'x' * 65, '../x'])
def test_event_of_no_bridge_batch_is_ignored(bridge, batch_id):
    bridge.client = FakeClient()
    assert call_info(bridge, 'batch.item', {'batch_id': batch_id}), \
        'the event handler is stuck'
    assert bridge.client.sent == []


def test_unpublishable_event_is_dropped_and_the_next_goes_out(bridge,
                                                              caplog):
    bridge.client = FakeClient()
    bridge.state.add('b1', 'sync')
    assert call_info(bridge, 'batch.item', {'batch_id': 'b1', 'idx': 0,
                                            'x': nested(100000)}), \
        'the event handler is stuck'
    assert [r for r in caplog.records if r.levelno == logging.ERROR
            and 'dropping batch.item of batch b1' in r.getMessage()]
    assert call_info(bridge, 'batch.end', {'batch_id': 'b1', 'state': 'done'})
    assert bridge.client.sent == [('sync/progress', {
        'batch_id': 'b1', 'state': 'done', 'event': 'batch.end'})]


def test_too_large_event_is_dropped(bridge, monkeypatch):
    from rpcmq.bridges import mqtt as mqtt_mod
    monkeypatch.setattr(mqtt_mod, 'MQTT_MAX_PAYLOAD', 100)
    bridge.client = FakeClient()
    bridge.state.add('b1', 'sync')
    assert call_info(bridge, 'batch.item', {'batch_id': 'b1',
                                            'error': 'e' * 200})
    assert bridge.client.sent == []


def test_undecodable_topic_does_not_break_the_network_loop(bridge):
    class Message:
        _topic = b'sync/\xff'
        payload, mid, qos = A.encode(), 9, 1

        @property
        def topic(self):
            return self._topic.decode('utf-8')

    bridge._on_message(None, None, Message())
    assert bridge._messages.get_nowait()[1:3] == ('sync/\ufffd',
                                                  A.encode())
