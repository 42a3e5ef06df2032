"""Casts with publisher confirms, pipelined (RabbitMQ).

Waiting for the broker's confirm after every message caps a publisher at
one broker round trip (and, for persistent messages, one disk flush) per
cast. ``ConfirmingPublisher`` keeps one channel in confirm mode instead:
``publish`` hands the message to a live channel and returns; the broker's
``basic.ack`` removes it from the unconfirmed set, a ``basic.nack`` or a
lost connection publishes it again (at-least-once, like casts themselves).

A broker that lost our exchanges and queues (reset, or deleted by hand)
must not swallow casts: after a lost connection or closed channel (a
publish to a missing exchange closes it) everything is declared again
before the unconfirmed casts go out again. Casts to a queue we declared
are ``mandatory``; if one comes back unroutable (its queue was deleted
under a live connection) the queue is declared again and it is resent.

Invariants:

* Messages are numbered and written under ``_io`` (one writer at a time),
  so delivery tag N is the N-th message published on the current channel.
* The reader thread, which receives acks, never waits for ``_io``: a
  writer blocked on a full socket must not stop acks from being read, or
  broker and client would wait for each other.
* At most ``window`` messages are unconfirmed; ``publish`` waits for room.
* ``flush(timeout)`` returns once everything published so far is
  confirmed; ``close`` flushes first, so a clean shutdown loses nothing.
"""

import collections
import itertools
import logging
import threading
import time

import kombu

from rpcmq.exceptions import TransportError
from rpcmq.transport import raw

__all__ = ['ConfirmingPublisher']

LOG = logging.getLogger(__name__)

READ_INTERVAL = 0.25


class ConfirmingPublisher:

    def __init__(self, driver, window=1024):
        self.driver = driver
        self.window = window
        self._conn = None
        self._channel = None
        self._io = threading.RLock()          # writing and (re)connecting
        self._state = threading.Condition()   # the bookkeeping below
        self._unconfirmed = collections.OrderedDict()  # tag -> message
        self._nacked = collections.deque()
        self._returned = set()         # message ids that came back
        self._redeclare = False        # declare what _nacked needs first
        self._ids = itertools.count(1)
        self._next_tag = 1
        self._reader = None
        self._closed = False

    # -- connection (caller holds _io) -------------------------------------

    def _connect(self, deadline):
        """(Re)open the channel; publish again what is unconfirmed."""
        if self._conn is not None:
            self._conn.collect()
            self.driver.forget_declarations()
            with self._state:
                pending = list(self._unconfirmed.values()) + \
                    list(self._nacked)
            self.driver.declare(_entities(pending), deadline)
        conn = self.driver.ensure_connection(
            self.driver.connection(),
            lambda exc, interval: self.driver.retry_or_give_up(
                exc, interval, deadline))
        channel = conn.channel()
        channel.events['basic_ack'].add(self._on_ack)
        channel.events['basic_nack'].add(self._on_nack)
        channel.events['basic_return'].add(self._on_return)
        channel.confirm_select()
        with self._state:
            pending = list(self._unconfirmed.values()) + list(self._nacked)
            self._unconfirmed.clear()
            self._nacked.clear()
            self._returned.clear()
            self._redeclare = False
            self._next_tag = 1
            self._conn, self._channel = conn, channel
        for message in pending:
            self._send(message)
        if self._reader is None or not self._reader.is_alive():
            self._reader = threading.Thread(target=self._read, daemon=True,
                                            name='rpcmq-confirms')
            self._reader.start()

    def _read(self):
        """Receive acks and nacks; reconnect when the connection drops."""
        while not self._closed:
            conn, channel = self._conn, self._channel
            if channel is None:
                self._reconnect()
                continue
            try:
                conn.drain_events(timeout=READ_INTERVAL)
            except TimeoutError:
                try:
                    conn.heartbeat_check()
                except self.driver.recoverable_errors() as exc:
                    self._lost(channel, exc)
            except self.driver.recoverable_errors() as exc:
                self._lost(channel, exc)

    def _lost(self, channel, exc):
        with self._state:
            if channel is self._channel and not self._closed:
                LOG.warning('confirming publisher lost %s (%s); %d casts '
                            'will be published again', self.driver.url, exc,
                            len(self._unconfirmed))
                self._channel = None
                self._state.notify_all()

    def _reconnect(self):
        """One bounded reconnect attempt, from the reader thread."""
        policy = self.driver.retry_policy
        with self._io:
            if self._channel is not None or self._closed:
                return
            try:
                self._connect(time.monotonic() + policy['interval_max'])
                return
            except (TransportError,) + self.driver.recoverable_errors():
                pass
        time.sleep(max(policy['interval_start'], READ_INTERVAL))

    # -- publishing ------------------------------------------------------

    def _send(self, message):
        """Publish on the current channel; the caller holds ``_io``.

        The message is recorded first, so if writing fails the reconnect
        publishes it again.
        """
        body, exchange, routing_key, properties, _ = message
        with self._state:
            self._unconfirmed[self._next_tag] = message
            self._next_tag += 1
            channel = self._channel
        raw.send(channel, body, exchange, routing_key,
                 mandatory='message_id' in properties, **properties)

    def _send_nacked(self, deadline):
        """Publish again what was refused or returned; the caller holds
        ``_io``. Returned casts get their queue declared again first."""
        if self._redeclare:
            self._redeclare = False
            with self._state:  # the reader thread appends to _nacked
                entities = _entities(self._nacked)
            self.driver.forget_declarations()
            self.driver.declare(entities, deadline)
        while self._nacked and self._channel is not None:
            self._send(self._nacked.popleft())

    def _wait_for_room(self, deadline):
        with self._state:
            while len(self._unconfirmed) >= self.window:
                remaining = None if deadline is None else \
                    deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TransportError(reason='%d casts await the '
                                         "broker's confirm" % self.window)
                self._state.wait(remaining)

    def publish(self, body, exchange, routing_key, declare=(),
                deadline=None, **properties):
        # Declaring waits for the broker's answer on the connection, which
        # the reader thread of this one is reading: use another one.
        self.driver.declare(declare, deadline)
        if any(isinstance(e, kombu.Queue) for e in declare):
            # Routable by construction: if it comes back, its queue is gone.
            properties['message_id'] = 'rpcmq.%d' % next(self._ids)
        message = (body, exchange, routing_key, properties, tuple(declare))
        if self._closed:
            raise TransportError(reason='transport is closed')
        self._wait_for_room(deadline)
        with self._io:
            try:
                if self._channel is None:
                    self._connect(deadline)
                self._send_nacked(deadline)
                self._send(message)
            except self.driver.recoverable_errors():
                # Everything unconfirmed, this one included, goes again.
                self._connect(deadline)

    # -- from the reader thread: bookkeeping only, never I/O --------------

    def _on_ack(self, delivery_tag, multiple):
        with self._state:
            back = self._returned_of(self._settle(delivery_tag, multiple))
            if back:
                LOG.warning('%d casts came back unroutable (queue %s is '
                            'gone); declaring it again and publishing them '
                            'again', len(back), back[0][2])
                self._nacked.extend(back)
            self._state.notify_all()

    def _on_nack(self, delivery_tag, multiple):
        with self._state:
            again = self._settle(delivery_tag, multiple)
            LOG.warning('broker refused %d casts; they will be published '
                        'again', len(again))
            self._returned_of(again)
            self._nacked.extend(again)
            self._state.notify_all()

    def _returned_of(self, settled):
        """Those of ``settled`` that came back unroutable (RabbitMQ sends
        basic.return before their ack); their queue is declared again
        before they go out again. The caller holds ``_state``."""
        back = [m for m in settled
                if m[3].get('message_id') in self._returned]
        if back:
            self._returned.difference_update(m[3]['message_id']
                                             for m in back)
            self._redeclare = True
        return back

    def _on_return(self, exc, exchange, routing_key, message):
        with self._state:
            self._returned.add(message.properties.get('message_id'))

    def _settle(self, delivery_tag, multiple):
        tags = [t for t in self._unconfirmed if t <= delivery_tag] \
            if multiple else [delivery_tag]
        return [self._unconfirmed.pop(t) for t in tags
                if t in self._unconfirmed]

    def flush(self, timeout=None):
        """Wait until every cast so far is confirmed; True if they are."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._nacked:
                with self._io:
                    try:
                        self._send_nacked(deadline)
                    except (TransportError,) + \
                            self.driver.recoverable_errors():
                        pass  # the reader reconnects and sends them
            with self._state:
                if not self._unconfirmed and not self._nacked:
                    return True
                remaining = None if deadline is None else \
                    deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._state.wait(min(remaining or READ_INTERVAL,
                                     READ_INTERVAL))

    def close(self, timeout=10):
        if not self.flush(timeout):
            LOG.error('%d casts were not confirmed by %s before closing',
                      len(self._unconfirmed) + len(self._nacked),
                      self.driver.url)
        self._closed = True
        if self._reader is not None:
            self._reader.join(2 * READ_INTERVAL + 1)
        if self._conn is not None:
            self._conn.release()


def _entities(messages):
    return [entity for message in messages for entity in message[4]]
