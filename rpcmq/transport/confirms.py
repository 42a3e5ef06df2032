"""Casts with publisher confirms, pipelined (RabbitMQ).

Waiting for the broker's confirm after every message caps a publisher at
one broker round trip (and, for persistent messages, one disk flush) per
cast. ``ConfirmingPublisher`` keeps one channel in confirm mode instead:
``publish`` writes the cast on it and returns; ``basic.ack`` settles it, a
``basic.nack`` or a lost connection sends it again (at-least-once, like
casts themselves). After a lost connection or closed channel (a publish to
a missing exchange closes it) what the casts need is declared again before
they go out again, so a broker reset does not swallow casts. Casts to a
queue we declared are ``mandatory``: one that comes back unroutable (its
queue was deleted) has its queue declared again, then is resent.

Every cast is confirmed, raised to its caller, or still tracked for resend:

* One lock, ``_lock`` (and its condition), guards the state (idle,
  connecting, open, closed) and all bookkeeping. No network I/O is done
  under it; no wait that may block outlasts the caller's deadline.
* ``publish`` records its cast as pending before anything is written and
  returns once it was written on a live channel. If that cannot happen by
  its deadline, the cast leaves pending (or, if a writer holds it, is
  marked abandoned) and TransportError is raised: it is not sent later.
* Writers hold ``_wlock`` (waiting for it at most until their deadline),
  take and number the pending casts under ``_lock`` and write them outside
  it, so delivery tag N is the N-th cast written on the channel.
* A failed write, lost connection or closed channel marks that channel
  generation lost: its unconfirmed casts are pending again (once written, a
  cast is resent). A failure of an older generation changes nothing. The
  reader reconnects after a pause (the retry interval), and resends nacked
  casts ``nack_backoff`` after the last nack: a cluster node refuses casts
  until their queue has a new leader. A cast refused ``nacks_per_channel``
  times on one channel goes out on a new connection (with what that
  channel left unconfirmed): after a leader died, RabbitMQ 3.10 can leave
  a channel refusing one queue's casts while new channels are served.
* One thread, the reader (``confirmreader``), receives acks, nacks and
  returns and is the only one to (re)connect; it never waits for
  ``_wlock``.
* At most ``window`` casts are tracked; ``publish`` waits for room.
  ``flush(timeout)`` returns once everything published so far is
  confirmed; ``close`` flushes first, so a clean shutdown loses nothing.
"""

import collections
import itertools
import logging
import threading
import time

import kombu

from rpcmq.exceptions import (
    AuthenticationError,
    BrokerUnreachable,
    TransportError,
)
from rpcmq.observe import metrics
from rpcmq.transport import raw
from rpcmq.transport.confirmreader import (
    CLOSED,
    CONNECTING,
    IDLE,
    OPEN,
    READ_INTERVAL,
    ConfirmReader,
)

__all__ = ['Confirmed', 'ConfirmingPublisher', 'Receipt']

LOG = logging.getLogger(__name__)



class _Cast:
    """``tag``: None while pending, else its delivery tag (or HELD);
    ``written``: once, so its publish returned; ``abandoned``: its publish
    raised, never (re)send it; ``error``: raw.send refused the cast;
    ``nacks``: how often the broker refused it; ``confirmed``: the broker
    acked it."""

    __slots__ = ('args', 'properties', 'declare', 'tag', 'written',
                 'abandoned', 'error', 'nacks', 'confirmed')

    def __init__(self, args, properties, declare):
        self.args, self.properties, self.declare = args, properties, declare
        self.tag = self.error = None
        self.written = self.abandoned = self.confirmed = False
        self.nacks = 0


class Receipt:
    """The casts of one ``publish_many``: ``wait(timeout)`` is True once
    the broker confirmed every one of them (False if one was raised to
    its caller, or the timeout passed first). Other casts of the same
    publisher, confirmed or not, do not count."""

    def __init__(self, publisher, casts):
        self._publisher, self._casts = publisher, casts

    def wait(self, timeout=None):
        return self._publisher.wait_confirmed(self._casts, timeout)


class Confirmed:
    """A Receipt for a transport without publisher confirms: what was
    written is all it can know."""

    @staticmethod
    def wait(timeout=None):
        return True


class ConfirmingPublisher(ConfirmReader):

    nack_backoff = 0.5  # seconds between a nack and the cast's resend
    nacks_per_channel = 3  # refusals of one cast before a new channel

    def __init__(self, driver, window=1024):
        self.driver = driver
        self.window = window
        self._lock = threading.Lock()
        self._cond, self._waiting = threading.Condition(self._lock), 0
        self._wlock = threading.Lock()
        self._state, self._gen = IDLE, 0  # _gen: the channel's generation
        self._conn = self._channel = self._reader = self._failure = None
        self._pending = collections.deque()
        self._unconfirmed = collections.OrderedDict()  # tag -> _Cast
        self._redeclare = []    # came back: declare their queue, resend
        self._nacked = []       # refused: resent once _resend_at passed
        self._resend_at = 0.0
        self._stale = None      # the nacked cast that condemns the channel
        self._returned = set()  # message ids of basic.return
        self._next_tag = 1
        self._ids = itertools.count(1)
        metrics.watch_confirmer(self)

    def _wait(self, timeout):
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _notify(self):
        if self._waiting:
            self._cond.notify_all()

    def _acquire_wlock(self, deadline):
        return self._wlock.acquire(False) or self._wlock.acquire(
            timeout=-1 if deadline is None else _remaining(deadline))

    def _tracked(self):
        return len(self._pending) + len(self._unconfirmed) + \
            len(self._redeclare) + len(self._nacked)

    def pending(self):
        """Casts published and not confirmed yet (a metric: no lock)."""
        return self._tracked()

    # -- publishing --------------------------------------------------------

    def publish(self, body, exchange, routing_key, declare=(),
                deadline=None, **properties):
        self._publish([self._cast(body, exchange, routing_key, declare,
                                  deadline, properties)], deadline)

    def publish_many(self, messages, deadline=None):
        """``publish`` each ``(body, exchange, routing_key, declare,
        properties)``, in order and written together; returns a
        ``Receipt`` once all are written. Raises as ``publish`` does:
        those written before stay tracked (they will be confirmed or sent
        again)."""
        casts = [self._cast(body, exchange, routing_key, declare, deadline,
                            dict(properties))
                 for body, exchange, routing_key, declare, properties
                 in messages]
        for start in range(0, len(casts), self.window):
            self._publish(casts[start:start + self.window], deadline)
        return Receipt(self, casts)

    def wait_confirmed(self, casts, timeout=None):
        """True once every one of ``casts`` is confirmed; False if one was
        raised to its caller (never sent again), the publisher closed, or
        ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if any(cast.abandoned for cast in casts):
                    return False
                if all(cast.confirmed for cast in casts):
                    return True
                if self._state == CLOSED or _expired(deadline):
                    return False
                self._wait(min(_remaining(deadline) or READ_INTERVAL,
                               READ_INTERVAL))

    def _cast(self, body, exchange, routing_key, declare, deadline,
              properties):
        if self._state == CLOSED:
            raise TransportError(reason='transport is closed')
        # Declaring waits for the broker's answer on the connection, which
        # the reader thread of this one is reading: use another one.
        self.driver.declare(declare, deadline)
        mandatory = any(isinstance(e, kombu.Queue) for e in declare)
        if mandatory:
            # Routable by construction: if it comes back, its queue is gone.
            properties['message_id'] = 'rpcmq.%d' % next(self._ids)
        return _Cast((body, exchange, routing_key, mandatory), properties,
                     tuple(declare))

    def _publish(self, casts, deadline):
        """Track ``casts`` (at most ``window``) and return once they are
        written on a live channel."""
        with self._lock:
            while self._state != CLOSED and \
                    self._tracked() + len(casts) > self.window:
                if _expired(deadline):
                    raise self._error(None, "%d casts await the broker's "
                                      'confirm' % self.window)
                self._wait(_remaining(deadline))
            if self._state == CLOSED:
                raise TransportError(reason='transport is closed')
            self._pending.extend(casts)
            if self._state == IDLE:
                self._state = CONNECTING
                self._reader = threading.Thread(
                    target=self._read, daemon=True, name='rpcmq-confirms')
                self._reader.start()
        last = casts[-1]  # written in order: once it is, all are
        try:
            while True:
                if self._state == OPEN and self._acquire_wlock(deadline):
                    try:
                        self._write(until=last)
                    finally:
                        self._wlock.release()
                if last.written:  # set once under _lock, never reset
                    break
                with self._lock:
                    if self._wait_writable(last, deadline):
                        break
        except BaseException:
            with self._lock:
                for cast in casts:
                    if not cast.written:
                        self._give_up(cast)
            raise
        for cast in casts:
            if cast.error is not None:  # refused alone, the rest written
                raise self._error(cast, None)

    def _wait_writable(self, cast, deadline):
        """True once ``cast`` is written, False once it is pending on an
        open channel; raise if neither in time. The caller holds _lock."""
        while not cast.written:
            if cast.error is not None or self._state == CLOSED or \
                    _expired(deadline) or self._state == CONNECTING and \
                    isinstance(self._failure, AuthenticationError):
                self._give_up(cast)
                raise self._error(cast, 'the connection is not taking '
                                  'writes')
            if self._state == OPEN and cast.tag is None:
                return False
            self._wait(_remaining(deadline))
        return True

    def _give_up(self, cast):
        """``cast`` is raised to its caller: never send it (again)."""
        if not cast.abandoned:
            cast.abandoned = True
            if cast.tag is None and cast in self._pending:
                self._pending.remove(cast)
            self._notify()  # room in the window

    def _error(self, cast, reason_if_open):
        if cast is not None and cast.error is not None:
            reason = 'cannot publish this cast: %r' % cast.error
        elif self._state in (CLOSED, OPEN):
            reason = 'transport is closed' if self._state == CLOSED else \
                reason_if_open
        elif isinstance(self._failure, TransportError):
            return type(self._failure)(self._failure.message,
                                       **self._failure.kwargs)
        else:
            return BrokerUnreachable(url=str(self.driver.url), reason=str(
                self._failure or 'not connected yet'))
        return TransportError(reason=reason)

    def _write(self, until=None):
        """Write pending casts in order, until ``until`` is written (None:
        until none is pending). The caller holds ``_wlock``."""
        batch = ()
        while True:
            with self._lock:
                for cast in batch:
                    cast.written = True
                if batch:
                    self._notify()
                if self._state != OPEN or not self._pending or (
                        until is not None and until.written):
                    return
                channel, gen, tag = self._channel, self._gen, self._next_tag
                batch = list(self._pending)
                self._pending.clear()
                for cast in batch:
                    cast.tag = tag
                    self._unconfirmed[tag] = cast
                    tag += 1
                self._next_tag = tag
            # One socket write for the batch (casts that gathered while
            # another was written, a notifier's round, resends).
            done, exc = 0, None
            try:
                if len(batch) == 1:
                    body, exchange, routing_key, mandatory = batch[0].args
                    raw.send(channel, body, exchange, routing_key,
                             mandatory=mandatory, **batch[0].properties)
                    done = 1
                else:
                    done, exc = raw.send_many(channel, [
                        cast.args + (cast.properties,) for cast in batch])
            except BaseException as failed:
                exc = failed
            if exc is not None:
                self._write_failed(gen, batch, done, exc)
                if not isinstance(exc, Exception):
                    raise exc
                return

    def _write_failed(self, gen, batch, done, exc):
        """The channel's numbering is lost with the write: so is it."""
        bad = batch[done] if done < len(batch) else None
        with self._lock:
            for cast in batch[:done]:
                cast.written = True
            if bad and not bad.written and gen == self._gen and \
                    self._state == OPEN and isinstance(exc, Exception) and \
                    not isinstance(exc, self.driver.recoverable_errors()):
                bad.error, bad.abandoned = exc, True  # its fault, not ours
                self._unconfirmed.pop(bad.tag, None)
            self._lose(gen, exc)

    def _lose(self, gen, exc):
        """Channel generation ``gen`` failed: what it did not confirm is
        pending again; the reader reconnects. The caller holds _lock."""
        if gen != self._gen or self._state != OPEN:
            return  # an older channel: already done
        again = [c for c in self._unconfirmed.values() if not c.abandoned]
        for cast in again:
            cast.tag = None
        self._pending.extendleft(reversed(again))
        self._unconfirmed.clear()
        self._state, self._failure = CONNECTING, exc
        self._notify()

    # -- flush, close ------------------------------------------------------

    def flush(self, timeout=None):
        """Wait until every cast so far is confirmed; True if they are."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                while not (self._state == OPEN and self._pending):
                    if not self._tracked():
                        return True
                    if self._state == CLOSED or _expired(deadline):
                        return False
                    self._wait(min(_remaining(deadline) or READ_INTERVAL,
                                   READ_INTERVAL))
            if self._acquire_wlock(deadline):
                try:  # help write what is pending
                    self._write()
                finally:
                    self._wlock.release()
            elif _expired(deadline):
                return False

    def close(self, timeout=10):
        if not self.flush(timeout):
            LOG.error('%d casts were not confirmed by %s before closing',
                      self._tracked(), self.driver.url)
        with self._lock:
            self._state = CLOSED
            self._notify()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(2 * READ_INTERVAL + 1)


def _remaining(deadline):
    return None if deadline is None else max(deadline - time.monotonic(), 0)


def _expired(deadline):
    return deadline is not None and time.monotonic() >= deadline
