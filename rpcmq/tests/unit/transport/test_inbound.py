"""A message nobody can decode costs that message only: frames fed to
rpcmq's frame handler as py-amqp's reader would feed them."""

import struct

import pytest
from amqp import spec
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import dumps

from rpcmq.transport import frames, inbound


class FakeChannel:
    def __init__(self, no_ack=()):
        self.no_ack_consumers = set(no_ack)
        self.rejected = []

    def basic_reject(self, tag, requeue):
        self.rejected.append((tag, requeue))


class FakeConnection:
    def __init__(self, channel):
        self.bytes_recv = 0
        self.channels = {1: channel}


def deliver(tag, routing_key='topic', consumer_tag='c1'):
    return (1, 1, struct.pack('>HH', *spec.Basic.Deliver) + dumps(
        'sLbss', (consumer_tag, tag, False, 'rpcmq', routing_key)))


def header(body_size, **properties):
    return (2, 1, struct.pack('>HHQ', 60, 0, body_size) +
            frames._properties(properties))


def body(data):
    return (3, 1, data)


@pytest.fixture
def feed():
    channel = FakeChannel(no_ack={'replies'})
    got = []
    handler = inbound.frame_handler(
        FakeConnection(channel),
        lambda ch, sig, args, msg: got.append((sig, msg)))

    def feed(*frames_):
        return [handler(frame) for frame in frames_]
    feed.got, feed.channel = got, channel
    return feed


def test_a_readable_message_is_dispatched_whole(feed):
    assert feed(deliver(1), header(5, correlation_id='c-1'), body(b'he'),
                body(b'llo')) == [False, False, False, True]
    [(sig, msg)] = feed.got
    assert sig == spec.Basic.Deliver
    assert msg.body == b'hello' and msg.properties['correlation_id'] == 'c-1'


def test_properties_that_are_not_utf8_cost_their_message_only(feed, caplog):
    # Its body frames are taken off and dropped with it; the next message
    # is read as ever.
    assert feed(deliver(7), header(4, correlation_id=b'\xff\xfe'),
                body(b'ab'), body(b'cd')) == [False, False, False, False]
    assert feed.channel.rejected == [(7, False)]
    assert feed.got == []
    assert 'delivery tag 7' in caplog.text and 'UnicodeDecodeError' in \
        caplog.text and 'rejected it without requeue' in caplog.text
    feed(deliver(8), header(2, correlation_id='ok'), body(b'ok'))
    assert [msg.body for _, msg in feed.got] == [b'ok']


def test_a_bodyless_unreadable_message_is_settled_at_its_header(feed):
    assert feed(deliver(3), header(0, type=b'\xff')) == [False, False]
    assert feed.channel.rejected == [(3, False)]
    feed(deliver(4), header(0, type='fine'))
    assert len(feed.got) == 1


def test_a_routing_key_that_is_not_utf8_is_refused_too(feed):
    feed(deliver(5, routing_key=b'k\xff'), header(1), body(b'x'))
    assert feed.channel.rejected == [(5, False)] and feed.got == []


def test_a_consumer_that_does_not_ack_has_it_dropped(feed, caplog):
    # Rejecting a delivery of a no-ack consumer closes the channel.
    feed(deliver(2, consumer_tag='replies'),
         header(1, correlation_id=b'\xff'), body(b'x'))
    assert feed.channel.rejected == [] and feed.got == []
    assert 'its consumer does not ack' in caplog.text


def test_other_frames_are_py_amqps(feed):
    assert feed((8, 0, b'')) == [False]  # heartbeat
    close_ok = (1, 1, struct.pack('>HH', *spec.Channel.CloseOk))
    assert feed(close_ok) == [True]
    assert feed.got == [(spec.Channel.CloseOk, None)]
    with pytest.raises(UnexpectedFrame):
        feed(body(b'no header before it'))
