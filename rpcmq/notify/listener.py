"""Subscribe to notifications by routing-key pattern.

    class Progress:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            print(event_type, payload)

    listener = rpcmq.get_notification_listener(
        transport, [rpcmq.Target(topic='batch.*')], [Progress()])
    listener.start()

Each endpoint method is named after a priority (``info``, ``error``...).
Without ``pool`` a listener has its own exclusive queue that lives as long
as it does; with ``pool='name'`` listeners share the durable queue
``name`` (events wait there while they are down, and are spread across
the pool's members). A notification is acked after the endpoints return.
"""

import json
import logging
import uuid

import kombu

from rpcmq.notify.notifier import notification_exchange
from rpcmq.transport.consuming import Consumer

__all__ = ['NotificationListener', 'get_notification_listener']

LOG = logging.getLogger(__name__)


class NotificationListener(Consumer):

    def __init__(self, transport, targets, endpoints, pool=None):
        super().__init__(transport.driver)
        self.transport = transport
        self.name = 'notification listener'
        self.patterns = [t.topic for t in targets]
        self.endpoints = list(endpoints)
        self.pool = pool
        self._queue_name = pool or 'rpcmq_notify_%s' % uuid.uuid4().hex

    def queue(self):
        exchange = notification_exchange(self.transport.conf)
        bindings = [kombu.binding(exchange, routing_key=p)
                    for p in self.patterns]
        durable = self.pool is not None
        return kombu.Queue(self._queue_name, bindings=bindings,
                           durable=durable, exclusive=not durable,
                           auto_delete=not durable)

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[self.queue()], on_message=self._on_message,
                         prefetch_count=64, no_ack=False)]

    def _on_message(self, message):
        try:
            note = json.loads(message.body)
            priority = note.get('priority', 'info')
            args = (note.get('context') or {}, note.get('publisher_id'),
                    note['event_type'], note.get('payload'),
                    {'message_id': note.get('message_id'),
                     'timestamp': note.get('timestamp')})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            LOG.warning('dropping malformed notification: %s', exc)
            message.ack()
            return
        for endpoint in self.endpoints:
            method = getattr(endpoint, priority, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                LOG.exception('notification endpoint %r failed on %s',
                              endpoint, args[2])
        message.ack()

    def start(self, ready_timeout=10.0):
        self.start_thread()
        self.ready.wait(ready_timeout)


def get_notification_listener(transport, targets, endpoints, pool=None):
    """A listener for ``targets`` (Target(topic=pattern)) -> ``endpoints``."""
    return NotificationListener(transport, targets, endpoints, pool=pool)
