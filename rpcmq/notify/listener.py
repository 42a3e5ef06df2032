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
the pool's members).

Settling. Any one message costs that message only: whatever handling it
raises, it is settled with a log line and the listener goes on.

* A body that is not a notification (not JSON, nested too deeply, no
  ``event_type``, an unknown ``priority``...) is rejected (dropped, or
  dead-lettered if the queue has a dead-letter exchange) with a WARNING.
* A notification is acked once every endpoint returned.
* If an endpoint raises, the event is queued again, as a copy with the
  header ``x-rpcmq-redeliveries`` incremented and ``x-rpcmq-done`` naming
  the endpoints that took it, published on the consuming channel to this
  listener's queue (default exchange) before the original is acked. The
  next delivery, on this listener or another of the pool, runs only the
  endpoints that have not taken it. After ``max_redeliveries`` copies
  (3 by default), an event its endpoints still fail on is rejected with an
  ERROR line naming its event type and message id.

``wire='oslo'`` (with ``[DEFAULT] oslo_compat``) reads what
oslo.messaging's notifiers send: for ``Target(topic='notifications')`` it
consumes ``notifications.<priority>`` on ``control_exchange`` (or the
Target's exchange) for every priority, from the queues oslo.messaging's
listeners use (one per priority, or ``pool``); endpoint methods are named
after oslo.messaging's priorities (``audit`` and ``sample`` too). Bodies
in either form are read on either wire.

This is the same on RabbitMQ, Redis and memory://: none of them counts
deliveries for us (RabbitMQ classic queues do not), so the count travels in
the message. A copy goes to the back of the queue, behind events that came
after it.

Delivery is at-least-once per listener: if the process or connection dies
between an endpoint's return and the ack (or between publishing a copy and
acking the original) the broker delivers the event again and endpoints that
had taken it run again. Endpoints should tolerate a repeated event.
"""

import json
import logging
import uuid

import kombu

from rpcmq.exceptions import MalformedMessage, Unauthenticated
from rpcmq.notify.notifier import (
    OSLO_PRIORITIES,
    PRIORITIES,
    check_wire,
    notification_exchange,
)
from rpcmq.rpc import oslowire
from rpcmq.transport import raw
from rpcmq.transport.consuming import Consumer

__all__ = ['MAX_REDELIVERIES', 'Malformed', 'NotificationListener',
           'get_notification_listener', 'parse_notification']

LOG = logging.getLogger(__name__)

#: How often an event an endpoint failed on is queued again, by default.
MAX_REDELIVERIES = 3
#: Headers of a queued-again copy: how many copies came before it, and the
#: endpoints (``endpoint_key``) that took the event already.
REDELIVERIES = 'x-rpcmq-redeliveries'
DONE = 'x-rpcmq-done'
JSON = 'application/json'


class Malformed(ValueError):
    """A message body that is not a notification."""


def parse_notification(body):
    """``(priority, args)`` of a notification body, where ``args`` are the
    endpoint method's arguments; Malformed says what is wrong."""
    if oslowire.is_envelope(body):
        try:
            note = oslowire.unwrap(body)
        except MalformedMessage as exc:
            raise Malformed(str(exc)) from None
        note['context'] = oslowire.split_context(note)
        note['priority'] = str(note.get('priority') or 'info').lower()
        return _fields(note, OSLO_PRIORITIES)
    try:
        note = json.loads(body)
    except RecursionError:
        raise Malformed('nested too deeply for json (RecursionError)') \
            from None
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise Malformed('not JSON: %s' % exc) from None
    if not isinstance(note, dict):
        raise Malformed('not a JSON object but %s' % type(note).__name__)
    return _fields(note, PRIORITIES)


def _fields(note, priorities):
    event_type = note.get('event_type')
    if not isinstance(event_type, str) or not event_type:
        raise Malformed('"event_type" must be a non-empty string')
    priority = note.get('priority', 'info')
    if not isinstance(priority, str) or priority not in priorities:
        raise Malformed('"priority" of %.100s must be one of %s'
                        % (event_type, ', '.join(priorities)))
    ctxt = note.get('context')
    if ctxt is None:
        ctxt = {}
    elif not isinstance(ctxt, dict):
        raise Malformed('"context" of %.100s must be a JSON object'
                        % event_type)
    metadata = {'message_id': note.get('message_id'),
                'timestamp': note.get('timestamp')}
    return priority, (ctxt, note.get('publisher_id'), event_type,
                      note.get('payload'), metadata)


def endpoint_key(index, endpoint):
    """How ``x-rpcmq-done`` names an endpoint: position and class, the same
    on every member of a pool that lists the same endpoints."""
    cls = type(endpoint)
    return '%d:%s.%s' % (index, cls.__module__, cls.__qualname__)


def _redeliveries(headers):
    count = (headers or {}).get(REDELIVERIES)
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    return 0


def _done(headers):
    done = (headers or {}).get(DONE)
    if not isinstance(done, (list, tuple)):
        return set()
    return {key for key in done if isinstance(key, str)}


def _where(message):
    """Words that locate a message in logs when its body cannot."""
    info = message.delivery_info or {}
    return 'routing key %.100r, %d bytes' % (
        info.get('routing_key'), len(message.body or b''))


class NotificationListener(Consumer):

    def __init__(self, transport, targets, endpoints, pool=None,
                 max_redeliveries=MAX_REDELIVERIES, wire='rpcmq'):
        super().__init__(transport.driver)
        if max_redeliveries < 0:
            raise ValueError('max_redeliveries must be 0 or more')
        check_wire(wire, transport.conf)
        self.transport = transport
        self.wire = wire
        self.name = 'notification listener'
        self.targets = list(targets)
        self.patterns = [t.topic for t in targets]
        self.endpoints = list(endpoints)
        self.pool = pool
        self.max_redeliveries = max_redeliveries
        self._keyed = [(endpoint_key(n, e), e)
                       for n, e in enumerate(self.endpoints)]
        self._queue_name = pool or 'rpcmq_notify_%s' % uuid.uuid4().hex

    def queue(self):
        exchange = notification_exchange(self.transport.conf)
        bindings = [kombu.binding(exchange, routing_key=p)
                    for p in self.patterns]
        durable = self.pool is not None
        return kombu.Queue(self._queue_name, bindings=bindings,
                           durable=durable, exclusive=not durable,
                           auto_delete=not durable,
                           queue_arguments=self.driver.durable_queue_arguments()
                           if durable else None)

    def oslo_queues(self):
        """oslo.messaging's listener queues: ``<topic>.<priority>`` each,
        or all bound to ``pool``, flags as the driver declares them."""
        driver, conf = self.driver, self.transport.conf
        keys = [(t.exchange or conf.control_exchange, '%s.%s' % (t.topic, p))
                for t in self.targets for p in OSLO_PRIORITIES]
        if self.pool is None:
            return [driver.topic_queue(name, key) for name, key in keys]
        return [kombu.Queue(
            self.pool, bindings=[kombu.binding(driver.exchange(name),
                                               routing_key=key)
                                 for name, key in keys],
            durable=driver.durable,
            queue_arguments=driver.durable_queue_arguments()
            if driver.durable else None)]

    def get_consumers(self, Consumer, channel):
        queues = self.oslo_queues() if self.wire == 'oslo' else \
            [self.queue()]
        return [Consumer(queues=queues, on_message=self._on_message,
                         prefetch_count=64, no_ack=False)]

    def _home(self, message):
        """The queue ``message`` came from (its copies go back there)."""
        if self.wire == 'oslo' and self.pool is None:
            return (message.delivery_info or {}).get('routing_key')
        return self._queue_name

    def _on_message(self, message):
        try:
            self._handle(message)
        except Exception:
            # A bug here or in kombu: still this message only.
            LOG.exception('%s: dropping a notification it failed on (%s)',
                          self.name, _where(message))
            self._settle(message, ack=False)

    def _handle(self, message):
        try:
            self._authenticate(message)
        except Unauthenticated as exc:
            LOG.warning('%s: dropping a notification (%s): %s', self.name,
                        _where(message), exc)
            self._settle(message, ack=False)
            return
        try:
            priority, args = parse_notification(message.body)
        except Malformed as exc:
            LOG.warning('%s: dropping malformed notification (%s): %s',
                        self.name, _where(message), exc)
            self._settle(message, ack=False)
            return
        event_type, message_id = args[2], args[4]['message_id']
        done = _done(message.headers)
        failed = []
        for key, endpoint in self._keyed:
            method = getattr(endpoint, priority, None)
            if key in done or not callable(method):
                continue
            try:
                method(*args)
            except Exception:
                LOG.exception('notification endpoint %r failed on %.100s '
                              '(message id %.100s)', endpoint, event_type,
                              message_id)
                failed.append(key)
            else:
                done.add(key)
        if failed:
            self._again(message, event_type, message_id, done)
        else:
            self._settle(message, ack=True)

    def _authenticate(self, message):
        """Check the signature of a signed notification, or of every one
        with ``[security] require_signed``; Unauthenticated if it fails."""
        keyring = self.transport.keyring
        if keyring.require_signed or keyring.is_signed(message.headers):
            info = message.delivery_info
            keyring.verify('notification', message.headers,
                           info.get('exchange') or '',
                           info.get('routing_key') or '', message.body)

    def _again(self, message, event_type, message_id, done):
        """Queue a copy of an event some endpoint failed on, or drop it."""
        count = _redeliveries(message.headers)
        if count >= self.max_redeliveries:
            LOG.error('%s: dropped notification %.100s (message id %.100s): '
                      'an endpoint failed on each of its %d deliveries',
                      self.name, event_type, message_id, count + 1)
            self._settle(message, ack=False)
            return
        headers = dict(message.headers or {})
        headers[REDELIVERIES] = count + 1
        headers[DONE] = sorted(done)
        # The copy goes through the default exchange with a new nonce:
        # signed again by this listener, where it has a key.
        headers.update(self.transport.keyring.sign(
            'notification', '', self._home(message), message.body))
        try:
            self._publish_copy(message, headers)
        except Exception as exc:
            # The channel is most likely gone, and the broker delivers the
            # original again (without counting this delivery).
            LOG.warning('%s: notification %.100s (message id %.100s) not '
                        'queued again (%s); requeueing it', self.name,
                        event_type, message_id, exc)
            try:
                message.requeue()
            except Exception:
                pass
            return
        self._settle(message, ack=True)
        LOG.warning('%s: notification %.100s (message id %.100s) queued '
                    'again (redelivery %d of %d)', self.name, event_type,
                    message_id, count + 1, self.max_redeliveries)

    def _publish_copy(self, message, headers):
        """Publish ``message`` again to our queue on its own channel: the
        broker takes the copy before the ack that follows on the channel.
        """
        properties = {'delivery_mode': 2 if self.pool else 1}
        if self.driver.raw_channels:
            # py-amqp: written, not read (we are inside a read already).
            raw.send(message.channel, message.body, '', self._home(message),
                     application_headers=headers, **properties)
            return
        kombu.Producer(message.channel).publish(
            message.body, exchange='', routing_key=self._home(message),
            serializer=None, content_type=message.content_type or JSON,
            content_encoding=message.content_encoding or 'utf-8',
            headers=headers, **properties)

    def _settle(self, message, ack):
        """Ack, or reject without requeueing; never raises."""
        if message.acknowledged:
            return
        try:
            if ack:
                message.ack()
            else:
                message.reject(requeue=False)
        except Exception as exc:  # the connection is gone: redelivered
            LOG.warning('%s: could not %s a notification (%s): %s',
                        self.name, 'ack' if ack else 'reject',
                        _where(message), exc)

    def start(self, ready_timeout=10.0):
        self.start_thread()
        self.ready.wait(ready_timeout)


def get_notification_listener(transport, targets, endpoints, pool=None,
                              max_redeliveries=MAX_REDELIVERIES,
                              wire='rpcmq'):
    """A listener for ``targets`` (Target(topic=pattern)) -> ``endpoints``;
    an event an endpoint raised on is queued again up to
    ``max_redeliveries`` times; ``wire='oslo'`` listens where
    oslo.messaging's notifiers send (see the module's doc)."""
    return NotificationListener(transport, targets, endpoints, pool=pool,
                                max_redeliveries=max_redeliveries, wire=wire)
