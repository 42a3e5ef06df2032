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

from rpcmq.transport.consuming import Consumer

__all__ = ['ReplyWaiter']

LOG = logging.getLogger(__name__)

REPLY_QUEUE_TEMPLATE = 'rpcmq_reply_{}'


class _Slot:
    __slots__ = ('event', 'body')

    def __init__(self):
        self.event = threading.Event()
        self.body = None


class ReplyWaiter(Consumer):
    """Consumes the process's exclusive reply queue in a background thread.

    After a reconnect the queue is declared again under the same name; a
    reply published while the connection was down is lost, and its caller
    gets MessagingTimeout instead of waiting forever.
    """

    name = 'reply consumer'

    def __init__(self, driver):
        super().__init__(driver)
        self.queue_name = REPLY_QUEUE_TEMPLATE.format(uuid.uuid4().hex)
        self._slots = {}
        self._start_lock = threading.Lock()

    # -- ConsumerMixin hooks ----------------------------------------------

    def get_consumers(self, Consumer, channel):
        queue = kombu.Queue(self.queue_name, exclusive=True,
                            auto_delete=True, durable=False)
        return [Consumer(queues=[queue], on_message=self._on_reply,
                         no_ack=True)]

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
                    self.start_thread()
        return self.ready.wait(timeout)

    def register(self, correlation_id):
        slot = self._slots[correlation_id] = _Slot()
        return slot

    def wait_reply(self, correlation_id, slot, timeout):
        """The reply body (bytes), or None if none came within timeout."""
        if slot.event.wait(timeout):
            return slot.body
        self._slots.pop(correlation_id, None)
        return None

    def forget(self, correlation_id):
        self._slots.pop(correlation_id, None)

    def close(self):
        self.stop()
        self.wait(5)
