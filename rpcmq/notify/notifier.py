"""Publish events such as ``batch.item`` on the notification exchange.

Message body (JSON)::

    {"event_type": "batch.item", "priority": "info", "publisher_id": "...",
     "timestamp": 1700000000.0, "message_id": "...", "payload": {...},
     "context": {...}}

The routing key is the event type, so a subscriber binds ``batch.*`` to get
every batch event, or ``batch.end`` for the last one only.
"""

import time
import uuid

import kombu

from rpcmq.rpc import wire

__all__ = ['Notifier', 'notification_exchange']

PRIORITIES = ('debug', 'info', 'warn', 'error', 'critical')
PUBLISH_DEADLINE = 30.0


def notification_exchange(conf):
    return kombu.Exchange(conf.notification_exchange, type='topic',
                          durable=True)


class Notifier:
    """Sends notifications; persistent and confirmed like casts."""

    def __init__(self, transport, publisher_id):
        self.transport = transport
        self.publisher_id = publisher_id
        self._exchange = notification_exchange(transport.conf)

    def notify(self, ctxt, event_type, payload, priority='info'):
        if priority not in PRIORITIES:
            raise ValueError('priority must be one of %s' % (PRIORITIES,))
        body = wire.encode({
            'event_type': event_type, 'priority': priority,
            'publisher_id': self.publisher_id, 'timestamp': time.time(),
            'message_id': uuid.uuid4().hex, 'payload': payload,
            'context': ctxt or {}})
        headers = self.transport.keyring.sign(
            'notification', self._exchange.name, event_type, body)
        self.transport.driver.publish(
            body, self._exchange, event_type, declare=(self._exchange,),
            confirm=True, delivery_mode=2, headers=headers or None,
            deadline=time.monotonic() + PUBLISH_DEADLINE)

    def info(self, ctxt, event_type, payload):
        self.notify(ctxt, event_type, payload, 'info')

    def error(self, ctxt, event_type, payload):
        self.notify(ctxt, event_type, payload, 'error')
