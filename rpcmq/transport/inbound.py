"""Frames in, read as py-amqp reads them, except that a message nobody can
decode costs that message only.

py-amqp decodes a message's properties when its header frame arrives, and
its routing fields when it dispatches the delivery: text properties
(``correlation_id``, ``reply_to``, ``type``...), the routing key and the
exchange must be UTF-8, and a header of type timestamp must fit a
datetime. RabbitMQ passes on what a publisher wrote, so one message that
broke those rules raised out of the connection's read: the consumer
reconnected, the broker delivered the same message again, and the server
went round that loop for ever (running again, each time, the casts
queued behind it, and answering the calls it had taken
``CallInterrupted``).

Here such a message is skipped whole (the body frames after a header
that could not be decoded are counted and dropped) and settled where it
can be: a delivery to a consumer that acks is rejected without requeue
(the broker drops it, or dead-letters it where its queue has a
dead-letter exchange); a delivery to a consumer that does not ack (a
reply consumer), a returned message or a ``basic.get`` answer is only
dropped. One WARNING line says which delivery and why. Every other frame
goes to py-amqp as before.
"""

import collections
import logging
import struct

from amqp import spec
from amqp.basic_message import Message
from amqp.channel import Channel
from amqp.exceptions import UnexpectedFrame
from amqp.method_framing import _CONTENT_METHODS
from amqp.serialization import loads

__all__ = ['frame_handler']

LOG = logging.getLogger(__name__)

#: The arguments py-amqp decodes when it dispatches each content method
#: (its own table, so both decode alike).
_ARGS = {sig: Channel._METHODS[sig].args for sig in _CONTENT_METHODS}
_SIG = struct.Struct('>HH')
_TAG = struct.Struct('>Q')


def frame_handler(connection, callback):
    """py-amqp's ``frame_handler``: a closure taking ``(type, channel,
    payload)`` frames, calling ``callback(channel, method_sig, args,
    content)`` for each method (with its content, once whole); True when
    a method was dispatched."""
    expected = collections.defaultdict(lambda: 1)  # frame type, by channel
    partial = {}      # channel -> the Message whose content is arriving
    unreadable = {}   # channel -> why that Message cannot be decoded

    def on_frame(frame):
        frame_type, channel, buf = frame
        connection.bytes_recv += 1
        if frame_type not in (expected[channel], 8):
            raise UnexpectedFrame('Received frame %s while expecting type: '
                                  '%s' % (frame_type, expected[channel]))
        if frame_type == 8:  # a heartbeat (counted above)
            return False
        if frame_type == 1:
            method_sig = _SIG.unpack_from(buf, 0)
            if method_sig in _CONTENT_METHODS:
                partial[channel] = Message(frame_method=method_sig,
                                           frame_args=buf)
                expected[channel] = 2
                return False
            callback(channel, method_sig, buf, None)
            return True
        msg = partial[channel]
        if frame_type == 2:
            try:
                msg.inbound_header(buf)
            except Exception as exc:  # body_size is read before the rest
                unreadable[channel] = exc
                msg.ready = not msg.body_size
        else:
            msg.inbound_body(buf)
        if not msg.ready:
            expected[channel] = 3  # the body (or the rest of it)
            return False
        expected[channel] = 1
        del partial[channel]
        problem = unreadable.pop(channel, None) or _args_problem(msg)
        if problem is not None:
            _drop(connection, channel, msg, problem)
            return False
        callback(channel, msg.frame_method, msg.frame_args, msg)
        return True

    return on_frame


def _args_problem(msg):
    """Why py-amqp could not decode this content method's arguments, or
    None (the common case, ASCII, is not decoded twice)."""
    args = msg.frame_args
    if args.isascii():
        return None
    try:
        loads(_ARGS[msg.frame_method], args, 4)
    except Exception as exc:
        return exc
    return None


def _drop(connection, channel_id, msg, problem):
    """Settle (where it can be) and log a message that cannot be read."""
    args = msg.frame_args
    if msg.frame_method != spec.Basic.Deliver:
        LOG.warning('dropped a message %s on channel %s: it cannot be '
                    'decoded (%s: %s)', 'returned by the broker'
                    if msg.frame_method == spec.Basic.Return else
                    'got from a queue', channel_id, type(problem).__name__,
                    problem)
        return
    # basic.deliver: consumer tag (a short string), delivery tag, ...;
    # read without decoding, as the text is what may be broken.
    size = args[4]
    consumer_tag = args[5:5 + size].decode('utf-8', 'replace')
    delivery_tag = _TAG.unpack_from(args, 5 + size)[0]
    channel = connection.channels.get(channel_id)
    settled = 'dropped it (its consumer does not ack)'
    if channel is not None and \
            consumer_tag not in getattr(channel, 'no_ack_consumers', ()):
        channel.basic_reject(delivery_tag, requeue=False)
        settled = 'rejected it without requeue'
    LOG.warning('a message delivered on channel %s to consumer %s '
                '(delivery tag %s, %d bytes of body) cannot be decoded '
                '(%s: %s); %s. A publisher wrote text properties, a routing '
                'key or a timestamp that AMQP clients cannot read',
                channel_id, consumer_tag, delivery_tag, msg.body_size or 0,
                type(problem).__name__, problem, settled)
