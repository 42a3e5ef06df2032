"""Replies on a connection of their own (RabbitMQ).

A server must not reply on the connection it consumes from: a broker that
fails on a reply closes the whole connection (RabbitMQ 3.10 does, 541
INTERNAL_ERROR, for a reply to a direct reply-to address on a node that
died), and with it every unsettled request, which the broker then
delivers again. Nor on a pooled publishing connection: nobody reads an
idle pooled connection, so its heartbeats stop and the broker drops it
between two replies.

``Replier`` keeps one connection for replies. One thread owns it: it
connects (the driver's retry policy, after a pause when a connection was
lost), reads it (heartbeats, the broker closing it) and connects again.
Any thread writes replies on it (frame writes are locked; replies
that meet go out in one write, see ``writes``). A reply is
sent at most once: one whose write fails is written again once on the next
connection if that comes within its deadline, else TransportError says
why. Replies are not confirmed: a caller that gets none times out.

Except the first to a direct reply-to address the broker has not yet
been seen to take (a new caller's node, or a forged address): that one
goes through ``probe.Probe``, confirmed, on a connection of its own, so
that an address the broker refuses by closing the connection costs only
its own reply.
"""

import logging
import threading
import time

from rpcmq.exceptions import TransportError
from rpcmq.transport import errors, probe, raw

__all__ = ['Replier']

LOG = logging.getLogger(__name__)

READ_INTERVAL = 0.25


class Replier:

    def __init__(self, driver):
        self.driver = driver
        self._cond = threading.Condition()
        self._conn = self._channel = self._thread = self._failure = None
        self._dead = None  # lost, for the owner to close
        self._gen = 0
        self._closed = False
        self._probe = probe.Probe(driver)

    def send(self, body, routing_key, deadline, gather=False, **properties):
        """Write one reply to the default exchange; TransportError if it
        cannot be written by ``deadline`` (``time.monotonic()``).
        Replies sent together go out in one write (``gather``: others are
        about to be sent, see ``writes``)."""
        head = self._probe.unproven(routing_key)
        if head is not None:
            return self._probe.send(head, body, routing_key, deadline,
                                    **properties)
        for last_try in (False, True):
            channel, gen = self._wait_open(deadline)
            try:
                raw.send(channel, body, '', routing_key, gather=gather,
                         **properties)
                return
            except self.driver.recoverable_errors() as exc:
                self._lost(gen, exc)
                if last_try:
                    raise errors.classify(exc, self.driver.url) from exc

    def _wait_open(self, deadline):
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name='rpcmq-replies')
                self._thread.start()
            while self._channel is None:
                if self._closed:
                    raise TransportError(reason='transport is closed')
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.classify(
                        self._failure or TimeoutError(
                            'no connection for replies yet'),
                        self.driver.url)
                self._cond.wait(left)
            return self._channel, self._gen

    def _lost(self, gen, exc):
        """Connection generation ``gen`` failed; the owner closes it and
        reconnects. No I/O here: only the owner thread touches the
        connection's socket besides writes (closing a TLS socket that
        another thread reads aborts the process)."""
        with self._cond:
            if gen != self._gen or self._channel is None:
                return
            self._dead, self._conn, self._channel = self._conn, None, None
            self._failure = exc
            self._probe.forget()  # a caller's node may have gone with it
            self._cond.notify_all()
        LOG.warning('reply connection to %s lost (%s); reconnecting',
                    self.driver.url, exc)

    def _bury(self):
        """In the owner thread: close the connection given up on."""
        with self._cond:
            dead, self._dead = self._dead, None
        if dead is not None:
            try:
                dead.collect()
            except Exception as err:
                LOG.debug('closing a reply connection: %r', err)

    # -- the owner thread --------------------------------------------------

    def _run(self):
        lost_before = False
        while not self._closed:
            self._bury()
            with self._cond:
                conn, gen = self._conn, self._gen
            if conn is None:
                if lost_before:  # let a cluster elect new queue leaders
                    self._pause(self.driver.retry_policy['interval_start'])
                self._connect()
                lost_before = True
                continue
            try:
                try:
                    conn.drain_events(timeout=READ_INTERVAL)
                except TimeoutError:
                    conn.heartbeat_check()
            except Exception as exc:
                self._lost(gen, exc)
        self._bury()
        with self._cond:
            conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception as exc:
                LOG.debug('closing the reply connection: %r', exc)

    def _connect(self):
        def errback(exc, interval):
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
                if self._closed:
                    raise TransportError(reason='transport is closed')
            self.driver.retry_or_give_up(exc, interval, None)
        try:
            conn = self.driver.ensure_connection(self.driver.connection(),
                                                 errback)
            channel = conn.channel()
        except Exception as exc:
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
            if not self._closed:
                LOG.warning('reply connection to %s: %s', self.driver.url,
                            exc)
            self._pause(self.driver.retry_policy['interval_max'])
            return
        with self._cond:
            if self._closed:
                conn.release()
                return
            self._conn, self._channel, self._failure = conn, channel, None
            self._gen += 1
            self._cond.notify_all()

    def _pause(self, seconds):
        until = time.monotonic() + seconds
        with self._cond:
            while not self._closed and time.monotonic() < until:
                self._cond.wait(until - time.monotonic())

    def close(self):
        """Stop; the owner thread closes the connection (it may be reading
        it right now)."""
        with self._cond:
            self._closed = True
            self._channel = None  # no more writes
            self._cond.notify_all()
        self._probe.close()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(2 * READ_INTERVAL + 1)
