"""Publish events such as ``batch.item`` on the notification exchange.

Message body (JSON)::

    {"event_type": "batch.item", "priority": "info", "publisher_id": "...",
     "timestamp": 1700000000.0, "message_id": "...", "payload": {...},
     "context": {...}}

The routing key is the event type, so a subscriber binds ``batch.*`` to get
every batch event, or ``batch.end`` for the last one only.

``wire='oslo'`` (with ``[DEFAULT] oslo_compat``) sends them as
oslo.messaging's notifier does instead: its envelope around
``{message_id, publisher_id, event_type, priority: "INFO", payload,
timestamp, _context_*}`` on ``control_exchange`` with routing key
``<topic>.<priority>`` for each of ``topics`` (oslo.messaging's default:
``notifications``), into a queue of that name declared on the way, as
oslo.messaging declares it.
"""

import datetime
import time
import uuid

import kombu

from rpcmq.rpc import oslowire, wire

__all__ = ['Notifier', 'notification_exchange']

PRIORITIES = ('debug', 'info', 'warn', 'error', 'critical')
#: oslo.messaging's priorities (its listeners' methods), lower case.
OSLO_PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical',
                   'sample')
WIRES = ('rpcmq', 'oslo')
PUBLISH_DEADLINE = 30.0


def check_wire(wire_name, conf):
    """ValueError unless ``wire_name`` is one this ``conf`` can speak."""
    if wire_name not in WIRES:
        raise ValueError('wire must be one of %s, not %r' % (WIRES,
                                                             wire_name))
    if wire_name == 'oslo' and not conf.oslo_compat:
        raise ValueError("wire='oslo' needs [DEFAULT] oslo_compat = true, "
                         "so exchanges and queues are declared with "
                         "oslo.messaging's flags")


def notification_exchange(conf):
    return kombu.Exchange(conf.notification_exchange, type='topic',
                          durable=True)


class Notifier:
    """Sends notifications; persistent and confirmed like casts.

    ``notify`` retries an unreachable broker for up to ``timeout`` seconds,
    then raises TransportError. Events that must get through keep the
    default; a periodic one the next supersedes (a heartbeat) gives a
    short one, so a broker outage does not hold its thread.
    """

    def __init__(self, transport, publisher_id, wire='rpcmq',
                 topics=('notifications',), timeout=PUBLISH_DEADLINE):
        check_wire(wire, transport.conf)
        self.transport = transport
        self.publisher_id = publisher_id
        self.timeout = timeout
        self.wire = wire
        self.topics = tuple(topics)
        self._exchange = notification_exchange(transport.conf) \
            if wire == 'rpcmq' else \
            transport.driver.exchange(transport.conf.control_exchange)

    def notify(self, ctxt, event_type, payload, priority='info'):
        if self.wire == 'oslo':
            return self._notify_oslo(ctxt, event_type, payload, priority)
        body, exchange, key, declare, properties = self._message(
            ctxt, event_type, payload, priority)
        self.transport.driver.publish(
            body, exchange, key, declare=declare, confirm=True,
            deadline=time.monotonic() + self.timeout, **properties)

    def notify_many(self, ctxt, events, priority='info'):
        """``notify`` each ``(event_type, payload)`` of ``events``, in
        order; returns once all are written (as one socket write where the
        transport allows: cheaper than one ``notify`` each). Returns a
        receipt: ``receipt.wait(timeout)`` is True once the broker
        confirmed these events (an outbox records them as sent then)."""
        if self.wire == 'oslo':
            for event_type, payload in events:
                self._notify_oslo(ctxt, event_type, payload, priority)
            return _Flushed(self.transport)
        messages = [self._message(ctxt, event_type, payload, priority)
                    for event_type, payload in events]
        return self.transport.driver.publish_many(
            messages, confirm=True,
            deadline=time.monotonic() + self.timeout)

    def _message(self, ctxt, event_type, payload, priority):
        """``(body, exchange, routing_key, declare, properties)`` of one
        event on rpcmq's wire."""
        if priority not in PRIORITIES:
            raise ValueError('priority must be one of %s' % (PRIORITIES,))
        body = wire.encode({
            'event_type': event_type, 'priority': priority,
            'publisher_id': self.publisher_id, 'timestamp': time.time(),
            'message_id': uuid.uuid4().hex, 'payload': payload,
            'context': ctxt or {}})
        headers = self.transport.keyring.sign(
            'notification', self._exchange.name, event_type, body)
        return (body, self._exchange, event_type, (self._exchange,),
                {'delivery_mode': 2, 'headers': headers or None})

    def _notify_oslo(self, ctxt, event_type, payload, priority):
        if priority not in OSLO_PRIORITIES:
            raise ValueError('priority must be one of %s'
                             % (OSLO_PRIORITIES,))
        now = datetime.datetime.now(datetime.timezone.utc)
        body = oslowire.encode_notification({
            'message_id': str(uuid.uuid4()),
            'publisher_id': self.publisher_id, 'event_type': event_type,
            'priority': priority.upper(), 'payload': payload,
            'timestamp': now.strftime('%Y-%m-%d %H:%M:%S.%f')}, ctxt)
        driver = self.transport.driver
        for topic in self.topics:
            key = '%s.%s' % (topic, priority)
            headers = self.transport.keyring.sign(
                'notification', self._exchange.name, key, body)
            driver.publish(
                body, self._exchange, key,
                declare=(driver.topic_queue(self._exchange.name, key),),
                confirm=True, delivery_mode=2, headers=headers or None,
                deadline=time.monotonic() + self.timeout)

    def flush(self, timeout=None):
        """Wait until the broker confirmed every notification sent so far
        (and every other cast of this transport); True if it has. ``notify``
        returns once a notification is written: one the broker refuses is
        published again until it takes it, for as long as this process
        lives. (``notify_many``'s receipt waits for its own events only.)
        """
        return self.transport.flush(timeout)

    def info(self, ctxt, event_type, payload):
        self.notify(ctxt, event_type, payload, 'info')

    def error(self, ctxt, event_type, payload):
        self.notify(ctxt, event_type, payload, 'error')


class _Flushed:
    """A receipt where only the transport's ``flush`` can tell (oslo's
    wire sends one message per topic)."""

    def __init__(self, transport):
        self._transport = transport

    def wait(self, timeout=None):
        return self._transport.flush(timeout)
