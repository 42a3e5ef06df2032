"""One reply consumer per transport, handing replies to callers.

Every ``call`` registers its ``correlation_id`` here, publishes its request
with ``reply_to`` = this consumer's queue, and waits on its slot. Whoever
reads the connection (the consumer thread, a green thread under eventlet,
or a caller reading for itself, see below) puts each reply in the slot of
its ``correlation_id``; replies nobody waits for any more (the call timed
out) are dropped. Safe from any number of threads and green threads.

On RabbitMQ the consumer uses direct reply-to (``amq.rabbitmq.reply-to``):
no reply queue exists at all, and the broker requires requests to be
published on the consuming channel, so ``publish`` writes them there (frame
writes are locked by py-amqp; one thread at a time reads, see below).
Elsewhere it consumes an exclusive queue and requests go through the
producer pool.

Who reads the consumer's connection (RabbitMQ; on polling transports,
memory and Redis, the consumer thread alone): a caller waiting for its
reply reads it itself when nobody else does (one thread wake-up per call
instead of two: the consumer thread's, then the caller's), handing on the
replies of other calls it meets. The consumer thread, which owns the
connection (it connects, consumes, reconnects and checks heartbeats),
reads while calls wait and no caller reads, and otherwise looks at the
connection once a second (heartbeats, the broker closing it). One reader
at a time: the turn passes under ``_turn``, a caller reads for at most
``DRAIN_INTERVAL`` before looking whether the owner needs the connection,
and the owner closes a connection only once no caller reads it. Whatever
a caller's read raises (a lost connection, the broker closing the
channel) is raised again in the owner's loop, which handles it as if it
had read it itself: the consumer never goes deaf because a caller met
the error.

A direct reply-to reply can only reach the channel its request was
published on: when that channel's connection is lost, the calls published
on it get ``LOST`` at once instead of waiting out their timeout. (An
exclusive reply queue is declared again under the same name, so calls
waiting on it keep waiting: their replies may still come.)
"""

import functools
import itertools
import json
import logging
import socket
import threading
import time
import uuid

import kombu

from rpcmq.transport import raw
from rpcmq.transport.consuming import (
    DRAIN_INTERVAL,
    HEARTBEAT_CHECK_INTERVAL,
    Consumer,
)

__all__ = ['ReplyWaiter']

LOG = logging.getLogger(__name__)

REPLY_QUEUE_TEMPLATE = 'rpcmq_reply_{}'
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
LOST = object()  # wait_reply's answer when the reply can no longer come


_HEARTBEAT = object()
IDLE_READ = 0.01  # seconds the owner reads when no call waits


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

    __slots__ = ('lock', 'body', 'headers', 'channel', 'request')

    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.body = None
        self.headers = None
        self.channel = None  # direct reply-to: where the request went
        self.request = None  # direct reply-to: what to send again


class _Unsent:
    """A slot's body when its request's write failed after its caller
    went on to wait (``writes``): the caller sends it again."""

    __slots__ = ('error',)

    def __init__(self, error):
        self.error = error


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
        # Who reads the connection (see the module's docstring).
        self._turn = threading.Condition()
        self._reader = None      # the thread reading it now, or None
        self._readable = None    # the consuming connection, or None
        self._owner_waits = False  # the owner needs it back: callers leave
        self._failure = None     # what a caller's read raised, for the owner

    # -- ConsumerMixin hooks ----------------------------------------------

    def consume(self, limit=None, timeout=None, safety_interval=1, **kwargs):
        """kombu's consume loop; where callers read (``callers_read``:
        RabbitMQ), reading only in the owner's turns."""
        if not self.driver.callers_read:  # _readable stays None
            return super().consume(limit, timeout, safety_interval,
                                   **kwargs)
        return self._consume_in_turns(**kwargs)

    def _consume_in_turns(self, **kwargs):
        with self.consumer_context(**kwargs) as (conn, _, _):
            with self._turn:
                self._readable = conn
            try:
                while not self.should_stop:
                    self.on_iteration()  # heartbeats, also while callers read
                    read_for = self._owner_turn()
                    if read_for is None:
                        continue
                    if isinstance(read_for, BaseException):
                        raise read_for  # the owner's turn, kept till closed
                    try:
                        conn.drain_events(timeout=read_for)
                    except socket.timeout:
                        conn.heartbeat_check()
                    except OSError:
                        if not self.should_stop:
                            raise
                    finally:
                        self._end_turn()
                    yield
            finally:
                with self._turn:  # closed once no caller reads it
                    self._readable, self._owner_waits = None, True
                    if self._reader is threading.current_thread():
                        self._reader = None
                    self._turn.wait_for(lambda: self._reader is None)
                    # What callers met on this connection is handled now.
                    self._owner_waits, self._failure = False, None

    def _owner_turn(self):
        """Wait for the owner's turn to read: while calls wait and no
        caller reads, or once a second. How long to read for, what a
        caller's read raised (to raise, keeping the turn), or None if it
        is not the owner's turn."""
        with self._turn:
            if self._reader is not None or \
                    not (self._slots or self._failure):
                self._turn.wait(HEARTBEAT_CHECK_INTERVAL)
            if self._reader is not None or self.should_stop:
                return None
            self._reader = threading.current_thread()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                return failure
            return DRAIN_INTERVAL if self._slots else IDLE_READ

    def _end_turn(self):
        with self._turn:
            self._reader = None
            if self._slots or self._owner_waits or self._failure:
                self._turn.notify_all()

    def _read_for(self, slot, deadline):
        """Read the connection in the caller's thread until ``slot`` has
        its reply, if nobody else reads it; True once it has. False if
        someone else reads, the connection fails (its owner finds out and
        reconnects), the owner needs it, or ``deadline`` passes."""
        with self._turn:
            conn = self._readable
            if conn is None or self._reader is not None or \
                    self._owner_waits:
                return False
            self._reader = threading.current_thread()
        try:
            while not slot.lock.acquire(False):
                left = deadline - time.monotonic()
                if left <= 0 or self._owner_waits:
                    return False
                try:
                    conn.drain_events(timeout=min(left, DRAIN_INTERVAL))
                except socket.timeout:
                    pass
                except Exception as exc:  # for the owner to handle
                    with self._turn:
                        self._failure = self._failure or exc
                    return False
            return True
        finally:
            self._end_turn()

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
        have carried it was lost, or None if none came within timeout.
        A request whose write failed after ``publish`` returned is sent
        again (TransportError if it cannot be within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self._wait(correlation_id, slot, deadline)
            if not isinstance(body, _Unsent):
                return body
            try:
                self._send_again(correlation_id, slot, body.error, deadline)
            except BaseException:
                self.forget(correlation_id)
                raise

    def _send_again(self, correlation_id, slot, error, deadline):
        LOG.warning('publishing a call on %s failed (%s); waiting for the '
                    'reconnect', self.driver.url, error)
        failed_on, slot.channel = slot.channel, None  # not LOST: unsent
        slot.body = None
        self._slots[correlation_id] = slot  # (its owner reads meanwhile)
        self._wait_for_another_channel(
            failed_on, max(0.0, deadline - time.monotonic()))
        body, exchange, routing_key, properties = slot.request
        self.publish(body, exchange, routing_key, deadline, slot,
                     **properties)

    def _wait(self, correlation_id, slot, deadline):
        if self._read_for(slot, deadline):
            return slot.body
        left = max(0.0, deadline - time.monotonic())
        if slot.lock.acquire(timeout=min(left, threading.TIMEOUT_MAX)):
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
        connection) to consume on a new channel and writes again. When
        another caller is writing already, the request is left to it and
        this returns at once; should that write fail, ``wait_reply`` sends
        it again.
        """
        slot.request = (body, exchange, routing_key, properties)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.wait_ready(remaining):
                raise self.unreachable('within the call timeout')
            channel = slot.channel = self._channel
            try:
                raw.send(channel, body, exchange, routing_key,
                         reply_to=DIRECT_REPLY_TO,
                         on_failure=functools.partial(
                             self._unsent, properties.get('correlation_id'),
                             slot),
                         **properties)
                return
            except self.driver.recoverable_errors() as exc:
                if slot.body is LOST:
                    return  # its caller learns so; do not run it later
                # It never left whole: not one for the lost connection
                # to answer LOST, but one to send on the next.
                slot.channel = None
                LOG.warning('publishing a call on %s failed (%s); waiting '
                            'for the reconnect', self.driver.url, exc)
                self._wait_for_another_channel(channel, remaining)

    def _wait_for_another_channel(self, channel, timeout):
        def moved_on():
            return (self._channel is not channel and self.ready.is_set()) \
                or self.last_error is not None
        with self._changed:
            self._changed.wait_for(moved_on, timeout)

    def _unsent(self, correlation_id, slot, error):
        """The write of a request left to another caller failed: its
        caller (waiting for the reply) sends it again. Unless the call was
        answered ``LOST`` already, or gave up."""
        if self._slots.pop(correlation_id, None) is slot:
            slot.body = _Unsent(error)
            slot.lock.release()

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

    def stop(self):
        super().stop()
        with self._turn:
            self._turn.notify_all()

    def close(self):
        self.stop()
        self.wait(5)
