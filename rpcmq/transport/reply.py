"""One reply consumer per transport, handing replies to callers.

Every ``call`` registers its ``correlation_id`` here, publishes its request
with ``reply_to`` = this consumer's queue, and waits on its slot. The
consumer thread (a green thread under eventlet) puts each reply in the slot
of its ``correlation_id``; replies nobody waits for any more (the call timed
out) are dropped. Safe from any number of threads and green threads.
"""

import logging
import threading
import uuid

import kombu
from kombu.mixins import ConsumerMixin

from rpcmq.transport.consuming import Stopped, start_thread

__all__ = ['ReplyWaiter']

LOG = logging.getLogger(__name__)

REPLY_QUEUE_TEMPLATE = 'rpcmq_reply_{}'


class _Slot:
    __slots__ = ('event', 'body')

    def __init__(self):
        self.event = threading.Event()
        self.body = None


class ReplyWaiter(ConsumerMixin):
    """Consumes the process's exclusive reply queue in a background thread.

    After a reconnect the queue is declared again under the same name; a
    reply published while the connection was down is lost, and its caller
    gets MessagingTimeout instead of waiting forever.
    """

    def __init__(self, driver):
        self.driver = driver
        self.connection = driver.connection()
        self.queue_name = REPLY_QUEUE_TEMPLATE.format(uuid.uuid4().hex)
        self._slots = {}
        self._ready = threading.Event()
        self._thread = None
        self._start_lock = threading.Lock()

    # -- ConsumerMixin hooks ----------------------------------------------

    def get_consumers(self, Consumer, channel):
        queue = kombu.Queue(self.queue_name, exclusive=True,
                            auto_delete=True, durable=False)
        return [Consumer(queues=[queue], on_message=self._on_reply,
                         no_ack=True)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self._ready.set()

    def on_connection_error(self, exc, interval):
        if self.should_stop:
            raise Stopped()
        self._ready.clear()
        LOG.warning('reply consumer lost %s (%s); reconnecting in %.1fs',
                    self.driver.url, exc, interval)

    def _on_reply(self, message):
        cid = message.properties.get('correlation_id')
        slot = self._slots.pop(cid, None)
        if slot is None:
            LOG.debug('dropping reply %s: no caller waits for it', cid)
            return
        slot.body = message.body
        slot.event.set()

    # -- caller side ------------------------------------------------------

    def ensure_started(self, timeout):
        """Start the consumer once; wait until its queue exists."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = start_thread(self, 'rpcmq-replies')
        return self._ready.wait(timeout)

    def register(self, correlation_id):
        slot = self._slots[correlation_id] = _Slot()
        return slot

    def wait(self, correlation_id, slot, timeout):
        """The reply body (bytes), or None if none came within timeout."""
        if slot.event.wait(timeout):
            return slot.body
        self._slots.pop(correlation_id, None)
        return None

    def forget(self, correlation_id):
        self._slots.pop(correlation_id, None)

    def stop(self):
        self.should_stop = True
        if self._thread is not None:
            self._thread.join(5)
