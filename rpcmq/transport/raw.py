"""Publishing straight on a py-amqp channel, from any thread.

py-amqp (5.4.0 and later, pinned in setup.py) locks frame writes: before,
every frame of a connection was packed into one shared buffer unlocked,
and two threads writing at once could corrupt each other's frames. So
several threads may publish on a channel that another thread consumes
from. ``channel.basic_publish`` is not used:
it reads from the socket (to look for connection.blocked), and only the
consuming thread may read.
"""

import amqp
import amqp.spec

__all__ = ['send']

JSON = 'application/json'


def send(channel, body, exchange, routing_key, mandatory=False,
         **properties):
    """Write one JSON message; ``expiration`` is in seconds, ``headers``
    the application headers (kombu's name). A ``mandatory`` message that
    no queue takes comes back as basic.return.
    """
    expiration = properties.pop('expiration', None)
    if expiration is not None:
        properties['expiration'] = str(int(expiration * 1000))
    headers = properties.pop('headers', None)
    if headers:
        properties['application_headers'] = headers
    msg = amqp.Message(body, content_type=JSON, content_encoding='utf-8',
                       **properties)
    channel.send_method(
        amqp.spec.Basic.Publish, 'Bssbb',
        (0, getattr(exchange, 'name', exchange) or '', routing_key,
         mandatory, False), msg)
