"""One reply consumer per transport, handing replies to callers.

Every ``call`` registers its ``correlation_id`` here, publishes its request
with ``reply_to`` = this consumer's queue, and waits on its slot. The
consumer thread (a green thread under eventlet) puts each reply in the slot
of its ``correlation_id``; replies nobody waits for any more (the call timed
out) are dropped. Safe from any number of threads and green threads.

On RabbitMQ the consumer uses direct reply-to (``amq.rabbitmq.reply-to``):
no reply queue exists at all, and the broker requires requests to be
published on the consuming channel, so ``publish`` writes them there (frame
writes are locked by py-amqp; only the consumer thread reads). Elsewhere it
consumes an exclusive queue and requests go through the producer pool.

A direct reply-to reply can only reach the channel its request was
published on: when that channel's connection is lost, the calls published
on it get ``LOST`` at once instead of waiting out their timeout. (An
exclusive reply queue is declared again under the same name, so calls
waiting on it keep waiting: their replies may still come.)
"""

import itertools
import json
import logging
import threading
import time
import uuid

import kombu

from rpcmq.transport import raw
from rpcmq.transport.consuming import Consumer

__all__ = ['ReplyWaiter']

LOG = logging.getLogger(__name__)

REPLY_QUEUE_TEMPLATE = 'rpcmq_reply_{}'
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
LOST = object()  # wait_reply's answer when the reply can no longer come


_HEARTBEAT = object()


def _envelope_msg_id(body):
    """The ``_msg_id`` of an oslo.messaging reply envelope (its replies
    carry no correlation id property), None for another body, or
    ``_HEARTBEAT`` for a call-monitor heartbeat (``ending`` false, no
    result: the call still runs), which is no reply."""
    head = body[:48]
    if b'"oslo.version"' not in (head.encode() if isinstance(head, str)
                                 else head):
        return None
    try:
        inner = json.loads(json.loads(body)['oslo.message'])
        if inner.get('ending') is False and inner.get('result') is None \
                and not inner.get('failure'):
            return _HEARTBEAT
        return inner.get('_msg_id')
    except (ValueError, TypeError, KeyError, AttributeError,
            RecursionError):
        return None


class _Slot:
    """Where one reply lands: a lock held until the reply is in ``body``.

    (A bare lock is cheaper than an Event: one allocation, no Condition.)
    """

    __slots__ = ('lock', 'body', 'headers', 'channel')

    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.body = None
        self.headers = None
        self.channel = None  # direct reply-to: where the request went


class ReplyWaiter(Consumer):
    """Consumes the process's exclusive reply queue in a background thread.

    After a reconnect the queue is declared again under the same name; a
    reply published while the connection was down is lost, and its caller
    gets MessagingTimeout instead of waiting forever.
    """

    name = 'reply consumer'

    def __init__(self, driver):
        super().__init__(driver)
        self.direct = driver.direct_reply_to
        self.queue_name = DIRECT_REPLY_TO if self.direct else \
            REPLY_QUEUE_TEMPLATE.format(uuid.uuid4().hex)
        self._slots = {}
        # Correlation ids only need to be unique among this consumer's
        # calls: a random prefix and a counter, no syscall per call.
        self._ids = map(('%s.%%x' % uuid.uuid4().hex).__mod__,
                        itertools.count(1))
        self._start_lock = threading.Lock()
        self._channel = None

    # -- ConsumerMixin hooks ----------------------------------------------

    def get_consumers(self, Consumer, channel):
        self._channel = channel
        if self.direct:
            queue = kombu.Queue(DIRECT_REPLY_TO, no_declare=True)
        else:
            queue = kombu.Queue(self.queue_name, exclusive=True,
                                auto_delete=True, durable=False)
        return [Consumer(queues=[queue], on_message=self._on_reply,
                         no_ack=True)]

    def _on_reply(self, message):
        cid = message.properties.get('correlation_id') or \
            _envelope_msg_id(message.body)
        if cid is _HEARTBEAT:
            return
        slot = self._slots.pop(cid, None)
        if slot is None:
            LOG.debug('dropping reply %s: no caller waits for it', cid)
            return
        slot.body = message.body
        slot.headers = message.headers
        slot.lock.release()

    # -- caller side ------------------------------------------------------

    def ensure_started(self, timeout):
        """Start the consumer once; wait until its queue exists.

        Raises the TransportError that says why not: a refused login at
        once, an unreachable broker (with its last error) after
        ``timeout``.
        """
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self.start_thread()
        if not self.wait_ready(timeout):
            raise self.unreachable('within %ss' % timeout)

    def register(self, correlation_id=None):
        """A correlation id (a new one unless given) and the slot its
        reply will land in."""
        correlation_id = correlation_id or next(self._ids)
        slot = self._slots[correlation_id] = _Slot()
        return correlation_id, slot

    def wait_reply(self, correlation_id, slot, timeout):
        """The reply body (bytes), ``LOST`` if the connection that would
        have carried it was lost, or None if none came within timeout."""
        if slot.lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX)):
            return slot.body
        if self._slots.pop(correlation_id, None) is None and \
                slot.lock.acquire(timeout=1.0):
            return slot.body  # it was being handed over as time ran out
        return None

    def publish(self, body, exchange, routing_key, deadline, slot,
                **properties):
        """Publish a request on the consuming channel (direct reply-to).

        Waits (until ``deadline``) for the consumer to be connected; if the
        write fails, waits for the consumer thread (the one owner of this
        connection) to consume on a new channel and writes again.
        """
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.wait_ready(remaining):
                raise self.unreachable('within the call timeout')
            channel = slot.channel = self._channel
            try:
                raw.send(channel, body, exchange, routing_key,
                         reply_to=DIRECT_REPLY_TO, **properties)
                return
            except self.driver.recoverable_errors() as exc:
                if slot.body is LOST:
                    return  # its caller learns so; do not run it later
                LOG.warning('publishing a call on %s failed (%s); waiting '
                            'for the reconnect', self.driver.url, exc)
                self._wait_for_another_channel(channel, remaining)

    def _wait_for_another_channel(self, channel, timeout):
        def moved_on():
            return (self._channel is not channel and self.ready.is_set()) \
                or self.last_error is not None
        with self._changed:
            self._changed.wait_for(moved_on, timeout)

    def on_connection_lost(self):
        """Direct reply-to: answer LOST to the calls published on the lost
        channel (a call publishing right now sets its channel before
        writing, so it is either failed here or written to the next)."""
        if not self.direct:
            return
        lost = self._channel
        for cid, slot in list(self._slots.items()):
            if slot.channel is lost and self._slots.pop(cid, None) is slot:
                slot.body = LOST
                slot.lock.release()

    def forget(self, correlation_id):
        self._slots.pop(correlation_id, None)

    def close(self):
        self.stop()
        self.wait(5)
