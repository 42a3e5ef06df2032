"""Messages of the MQTT bridge: parsing, keys, batch ids, manual acks."""

import hashlib
import json

import pytest

from rpcmq.bridges.common import InvalidInput
from rpcmq.bridges.mqtt import (
    BatchTopics,
    MqttBridge,
    is_output_topic,
    parse_message,
    url_key,
)
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


class FakeClient:
    def __init__(self):
        self.acks = []
        self.published = []

    def ack(self, mid, qos):
        self.acks.append((mid, qos))


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
