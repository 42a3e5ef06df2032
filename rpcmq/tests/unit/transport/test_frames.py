"""rpcmq packs its publishes and acks itself, faster than py-amqp: the
bytes must be exactly py-amqp's, whatever the properties, body and frame
size."""

import datetime
import itertools

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from rpcmq.transport import frames

FRAME_MAX = 4096

EVERY_PROPERTY = {
    'content_type': 'application/json',
    'content_encoding': 'utf-8',
    'application_headers': {
        'x-rpcmq-deadline': 1764851234.5, 'n': 7, 'big': 2 ** 40,
        'neg': -3, 'flag': True, 'none': None, 'text': 'ünïcode',
        'raw': b'\x00\xff', 'list': [1, 'two', {'three': 3.0}],
        'table': {'nested': {'deeper': 'yes'}},
        'when': datetime.datetime(2026, 12, 4, 15, 0, 0)},
    'delivery_mode': 2,
    'priority': 5,
    'correlation_id': 'b1f0c3a9e6d84a7c9f0e1d2c3b4a5968',
    'reply_to': 'amq.rabbitmq.reply-to.g1h2AA5yZXBseUA4',
    'expiration': '30000',
    'message_id': 'msg-1',
    'timestamp': 1764851234,
    'type': 'rpc',
    'user_id': 'guest',
    'app_id': 'rpcmq',
    'cluster_id': 'c1',
}


class Written:
    def __init__(self):
        self.data = b''

    def write(self, data):
        self.data += bytes(data)


class Connection:
    frame_max = FRAME_MAX
    bytes_sent = 0


def py_amqps(channel_id, args, body, properties):
    """What py-amqp writes for this publish."""
    out = Written()
    frame_writer(Connection(), out)(1, channel_id, spec.Basic.Publish, args,
                                    amqp.Message(body, **properties))
    return out.data


def args_of(exchange='rpcmq', routing_key='topic.server', mandatory=False):
    return dumps('Bssbb', (0, exchange, routing_key, mandatory, False))


def property_sets():
    """Every property alone, none, all, and some pairs in odd orders."""
    names = list(EVERY_PROPERTY)
    yield {}
    yield dict(EVERY_PROPERTY)
    yield dict(reversed(list(EVERY_PROPERTY.items())))
    for name in names:
        yield {name: EVERY_PROPERTY[name]}
    for a, b in itertools.combinations(names[::3], 2):
        yield {b: EVERY_PROPERTY[b], a: EVERY_PROPERTY[a]}


@pytest.mark.parametrize('properties', list(property_sets()))
def test_a_publish_is_byte_for_byte_py_amqps(properties):
    args = args_of()
    body = b'{"method": "echo", "args": {"x": 1}}'
    assert frames.publish(3, FRAME_MAX, args, body, dict(properties)) == \
        py_amqps(3, args, body, dict(properties))


@pytest.mark.parametrize('size', [0, 1, FRAME_MAX - 200, FRAME_MAX - 120,
                                  FRAME_MAX - 8, FRAME_MAX, 3 * FRAME_MAX + 5])
def test_bodies_of_every_size_are_framed_as_py_amqp_frames_them(size):
    """Around the point where py-amqp splits a body into frames."""
    args = args_of(mandatory=True)
    properties = {'content_type': 'application/json',
                  'correlation_id': 'c' * 32}
    body = bytes(i % 251 for i in range(size))
    for extra in range(0, 60, 7):  # move the split point byte by byte
        body_now = body[:max(0, size - extra)]
        assert frames.publish(65535, FRAME_MAX, args, body_now,
                              properties) == \
            py_amqps(65535, args, body_now, properties)


def test_a_text_body_is_encoded_as_py_amqp_encodes_it():
    args = args_of()
    properties = {'content_encoding': 'utf-8'}
    assert frames.publish(1, FRAME_MAX, args, 'héllo', properties) == \
        py_amqps(1, args, 'héllo', dict(properties))


def test_properties_set_to_none_are_left_out():
    args = args_of()
    given = {'content_type': 'application/json', 'reply_to': None,
             'correlation_id': 'abc', 'priority': None}
    assert frames.publish(1, FRAME_MAX, args, b'x', given) == \
        frames.publish(1, FRAME_MAX, args, b'x',
                       {'content_type': 'application/json',
                        'correlation_id': 'abc'}) == \
        py_amqps(1, args, b'x', dict(given))


def test_a_property_amqp_does_not_have_is_refused_by_name():
    with pytest.raises(ValueError, match="no property 'colour'"):
        frames.publish(1, FRAME_MAX, args_of(), b'x', {'colour': 'red'})


@pytest.mark.parametrize('bad', [{'application_headers': {'h': object()}},
                                 {'correlation_id': 'c' * 256}])  # shortstr
def test_values_amqp_cannot_carry_are_refused_as_py_amqp_refuses_them(bad):
    with pytest.raises(Exception) as theirs:
        py_amqps(1, args_of(), b'x', dict(bad))
    with pytest.raises(theirs.type):
        frames.publish(1, FRAME_MAX, args_of(), b'x', dict(bad))


def test_an_ack_is_byte_for_byte_py_amqps():
    for tag, multiple in [(1, False), (2 ** 63 + 1, True), (300, True)]:
        out = Written()
        frame_writer(Connection(), out)(1, 9, spec.Basic.Ack,
                                        dumps('Lb', (tag, multiple)), None)
        assert frames.ack(9, tag, multiple) == out.data
