"""Publishing straight on a py-amqp channel, from any thread.

py-amqp (5.4.0 and later, pinned in setup.py) locks frame writes: before,
every frame of a connection was packed into one shared buffer unlocked,
and two threads writing at once could corrupt each other's frames. So
several threads may publish on a channel that another thread consumes
from. ``channel.basic_publish`` is not used:
it reads from the socket (to look for connection.blocked), and only the
consuming thread may read. On rpcmq's own py-amqp transport
(``transport.amqp``) publishes go through ``writes.FrameWriter``, which
writes together those that meet.
"""

import amqp
import amqp.spec
from amqp.exceptions import RecoverableConnectionError
from amqp.serialization import dumps

from rpcmq.transport import writes

__all__ = ['send']

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
    expiration = properties.pop('expiration', None)
    if expiration is not None:
        properties['expiration'] = str(int(expiration * 1000))
    headers = properties.pop('headers', None)
    if headers:
        properties['application_headers'] = headers
    msg = amqp.Message(body, content_type=JSON, content_encoding='utf-8',
                       **properties)
    args = (0, getattr(exchange, 'name', exchange) or '', routing_key,
            mandatory, False)
    writer = getattr(getattr(channel, 'connection', None), '_frame_writer',
                     None)
    if not isinstance(writer, writes.FrameWriter):
        channel.send_method(amqp.spec.Basic.Publish, 'Bssbb', args, msg)
        return
    try:
        writer.publish(channel.channel_id, dumps('Bssbb', args), msg,
                       gather, on_failure)
    except StopIteration:  # as py-amqp's send_method
        raise RecoverableConnectionError('connection already closed')
