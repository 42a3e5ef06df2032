"""The reader of a ConfirmingPublisher (see ``confirms``).

One thread per publisher receives the broker's acks, nacks and returns and
is the only one to (re)connect: with the driver's retry policy it
connects, declares what pending casts need (on a pooled connection, not
the one it reads), opens a confirm channel and writes what is pending. It
never waits for the writers' lock: a writer blocked on a full socket must
not stop acks from being read, or broker and client would wait for each
other. The callbacks it runs from ``drain_events`` only keep books under
the publisher's lock; they never do I/O.
"""

import functools
import logging
import time

from rpcmq.exceptions import TransportError

LOG = logging.getLogger(__name__)

READ_INTERVAL = 0.25
IDLE, CONNECTING, OPEN, CLOSED = 'idle', 'connecting', 'open', 'closed'
HELD = 0  # the tag of a returned cast until its queue is declared again


class ConfirmReader:
    """The reader thread's half of ``ConfirmingPublisher``: it uses the
    publisher's lock, state and queues of casts, and its ``_write`` and
    ``_lose``."""

    def _read(self):
        """Receive acks, nacks and returns; (re)connect when needed."""
        while True:
            # Only this thread changes _gen and _conn: no lock needed.
            state, gen, conn = self._state, self._gen, self._conn
            if state == CLOSED:
                break
            try:
                if state == CONNECTING:
                    self._reconnect(conn)
                else:
                    self._serve(conn, gen)
            except Exception:  # never die: casts would wait forever
                LOG.exception('confirming publisher for %s', self.driver.url)
                self._backoff(READ_INTERVAL)
        if self._conn is not None:
            _quietly(self._conn.release)

    def _serve(self, conn, gen):
        if self._nacked and time.monotonic() >= self._resend_at:
            with self._lock:
                self._pending.extend(c for c in self._nacked
                                     if not c.abandoned)
                del self._nacked[:]
                stale, self._stale = self._stale, None
                if stale is not None:
                    self._lose(gen, TransportError(reason=(
                        'the broker refused a cast to %r %d times on one '
                        'channel; opening a new connection' % (
                            stale.args[2], stale.nacks))))
                    return
        if self._pending and self._wlock.acquire(blocking=False):
            try:  # resends and nacked casts, if nobody else is writing
                self._write()
            finally:
                self._wlock.release()
        try:
            try:
                conn.drain_events(timeout=READ_INTERVAL)
            except TimeoutError:
                conn.heartbeat_check()
        except Exception as exc:
            with self._lock:
                self._lose(gen, exc)
        if self._redeclare:
            self._declare_returned()

    def _reconnect(self, old):
        """Connect, declare what pending casts need, open a confirm
        channel; only the reader does this."""
        driver, conn, policy = self.driver, None, self.driver.retry_policy
        if old is not None:
            LOG.warning('confirming publisher lost %s (%s); %d casts will be '
                        'published again', driver.url, self._failure,
                        self._tracked())
            with self._lock:
                self._conn = self._channel = None
            _quietly(old.collect)  # no I/O; fails a write blocked on it
            driver.forget_declarations()
            # Straight back, a client lands on a live cluster node before
            # its quorum queues have a new leader, and is refused.
            self._backoff(policy['interval_start'])
        try:
            conn = driver.ensure_connection(driver.connection(),
                                            self._retrying)
            with self._lock:
                entities = _entities(self._pending)
            driver.declare(entities, time.monotonic() + policy['interval_max'])
            channel = conn.channel()
            channel.events['basic_ack'].add(
                functools.partial(self._settled, nacked=False))
            channel.events['basic_nack'].add(
                functools.partial(self._settled, nacked=True))
            channel.events['basic_return'].add(self._on_return)
            channel.confirm_select()
        except Exception as exc:
            with self._lock:
                self._failure = exc
                self._notify()
            if conn is not None:
                _quietly(conn.collect)
            if self._state != CLOSED:
                LOG.warning('confirming publisher cannot reach %s: %s',
                            driver.url, exc)
            self._backoff(policy['interval_start'])
            return
        with self._lock:
            if self._state == CONNECTING:
                self._gen += 1
                self._conn, self._channel, self._next_tag = conn, channel, 1
                self._returned.clear()
                self._stale = None
                self._state, self._failure = OPEN, None
                self._notify()
                conn = None
        if conn is not None:  # closed meanwhile
            _quietly(conn.release)

    def _retrying(self, exc, interval):
        with self._lock:
            self._failure = exc
            if self._state == CLOSED:
                raise TransportError(reason='transport is closed')
        self.driver.retry_or_give_up(exc, interval, None)

    def _backoff(self, seconds):
        until = time.monotonic() + max(seconds, READ_INTERVAL)
        with self._lock:  # close() cuts it short
            while self._state != CLOSED and time.monotonic() < until:
                self._wait(until - time.monotonic())

    def _declare_returned(self):
        """Declare again the queues of casts that came back; resend them."""
        with self._lock:
            batch = list(self._redeclare)
        self.driver.forget_declarations()
        try:
            self.driver.declare(_entities(batch), time.monotonic() +
                                self.driver.retry_policy['interval_max'])
        except Exception as exc:
            LOG.warning('cannot declare again the queue of %d returned '
                        'casts (%s); retrying', len(batch), exc)
            return
        with self._lock:
            del self._redeclare[:len(batch)]  # only this thread changes it
            for cast in batch:
                if not cast.abandoned:
                    cast.tag = None
                    self._pending.append(cast)
            self._notify()

    # -- from drain_events, in the reader: bookkeeping only, never I/O -----

    def _on_return(self, exc, exchange, routing_key, message):
        with self._lock:
            self._returned.add(message.properties.get('message_id'))

    def _settled(self, delivery_tag, multiple, nacked):
        """basic.ack or basic.nack. RabbitMQ sends basic.return before the
        ack of a returned cast: its queue is declared again, then it is
        sent again."""
        back, unconfirmed = [], self._unconfirmed
        with self._lock:
            if self._state != OPEN:
                return  # that channel was lost: all of it is pending
            # Tags are consecutive, in the order of _unconfirmed.
            first = next(iter(unconfirmed), delivery_tag) if multiple \
                else delivery_tag
            settled = [unconfirmed.pop(tag, None)
                       for tag in range(first, delivery_tag + 1)]
            for cast in settled:
                if cast is None:
                    continue
                if self._returned and cast.args[3] and \
                        cast.properties['message_id'] in self._returned:
                    self._returned.discard(cast.properties['message_id'])
                    cast.tag = HELD
                    back.append(cast)
                elif not nacked:
                    cast.confirmed = True
                elif not cast.abandoned:
                    cast.tag = None
                    cast.nacks += 1
                    if cast.nacks % self.nacks_per_channel == 0:
                        self._stale = cast
                    self._nacked.append(cast)
                    self._resend_at = time.monotonic() + self.nack_backoff
            self._redeclare.extend(back)
            self._notify()
        if nacked:
            LOG.warning('broker refused %d casts; they will be published '
                        'again in %.1fs', len(settled) - settled.count(None)
                        - len(back), self.nack_backoff)
        if back:
            LOG.warning('%d casts came back unroutable (queue %s is gone); '
                        'declaring it again and publishing them again',
                        len(back), back[0].args[2])


def _entities(casts):
    return [entity for cast in casts for entity in cast.declare]


def _quietly(close):
    try:
        close()
    except Exception as exc:
        LOG.debug('closing a confirm connection: %r', exc)
