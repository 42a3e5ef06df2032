"""Publishing straight on a py-amqp channel, from any thread.

py-amqp (5.4.0 and later, pinned in setup.py) locks frame writes: before,
every frame of a connection was packed into one shared buffer unlocked,
and two threads writing at once could corrupt each other's frames. So
several threads may publish on a channel that another thread consumes
from. ``channel.basic_publish`` is not used:
it reads from the socket (to look for connection.blocked), and only the
consuming thread may read. On rpcmq's own py-amqp transport
(``transport.amqp``) publishes are packed by ``frames`` and go through
``writes.FrameWriter``, which writes together those that meet.
"""

import amqp
import amqp.spec
from amqp.exceptions import RecoverableConnectionError
from amqp.serialization import dumps

from rpcmq.transport import writes

__all__ = ['send', 'send_many', 'writer_of']

JSON = 'application/json'


def send(channel, body, exchange, routing_key, mandatory=False,
         gather=False, on_failure=None, **properties):
    """Write one JSON message; ``expiration`` is in seconds, ``headers``
    the application headers (kombu's name). A ``mandatory`` message that
    no queue takes comes back as basic.return. Messages published at the
    same time on one connection go out in one write; ``gather``: others
    are about to be published, wait for them first; ``on_failure``: when
    another thread is writing, leave the message to it and return at
    once, ``on_failure(exc)`` being called should that write fail
    (``writes``). Without rpcmq's transport, written at once.
    """
    args, props = _publish(exchange, routing_key, mandatory, properties)
    writer = writer_of(channel)
    if writer is None:
        channel.send_method(amqp.spec.Basic.Publish, 'Bssbb', args,
                            amqp.Message(body, **props))
        return
    try:
        writer.publish(channel.channel_id, dumps('Bssbb', args), body, props,
                       gather, on_failure)
    except StopIteration:  # as py-amqp's send_method
        raise RecoverableConnectionError('connection already closed')


def send_many(channel, messages):
    """Write ``(body, exchange, routing_key, mandatory, properties)``
    messages in order, as ``send`` would each, in one socket write on
    rpcmq's transport. Return ``(done, error)``: how many were written
    whole and the exception that stopped the rest (None if none did). A
    message that cannot be built stops those after it, not those before.
    """
    publishes, error = [], None
    for body, exchange, routing_key, mandatory, properties in messages:
        try:
            publishes.append((body,) + _publish(
                exchange, routing_key, mandatory, dict(properties)))
        except Exception as exc:
            error = exc
            break
    writer = writer_of(channel)
    if writer is None:
        for done, (body, args, props) in enumerate(publishes):
            try:
                channel.send_method(amqp.spec.Basic.Publish, 'Bssbb', args,
                                    amqp.Message(body, **props))
            except BaseException as exc:
                return done, exc
        return len(publishes), error
    done, failed = writer.publish_many(channel.channel_id, [
        (dumps('Bssbb', args), body, props)
        for body, args, props in publishes])
    if failed is None and done == len(publishes):
        failed = error
    if isinstance(failed, StopIteration):  # as py-amqp's send_method
        failed = RecoverableConnectionError('connection already closed')
    return done, failed


def _publish(exchange, routing_key, mandatory, properties):
    """``(args, properties)`` of a basic.publish of JSON: its arguments and
    its AMQP properties (py-amqp's names); takes ``properties``."""
    expiration = properties.pop('expiration', None)
    if expiration is not None:
        properties['expiration'] = str(int(expiration * 1000))
    headers = properties.pop('headers', None)
    if headers:
        properties['application_headers'] = headers
    props = {'content_type': JSON, 'content_encoding': 'utf-8'}
    props.update(properties)
    return (0, getattr(exchange, 'name', exchange) or '', routing_key,
            mandatory, False), props


def writer_of(channel):
    """The connection's ``writes.FrameWriter``; None off rpcmq's
    transport."""
    writer = getattr(getattr(channel, 'connection', None), '_frame_writer',
                     None)
    return writer if isinstance(writer, writes.FrameWriter) else None
