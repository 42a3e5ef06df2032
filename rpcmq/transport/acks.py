"""Acks of one consumer channel, written together where they can be.

A server acks every request after it ran (or was refused). Written one
by one, each ack is a frame and a socket write of its own: with small
casts, a fifth of a draining server's time. Here a worker that finishes
only marks its delivery done; the first worker to find nobody writing
becomes the writer: while other deliveries are running, it lets the
workers that are ready run first (``time.sleep(0)``: a green yield under
eventlet, the GIL handed over under threads), then writes what has
gathered, until nothing is left:

* one ``basic.ack`` with ``multiple`` for the finished deliveries that
  come before the oldest one still running, and
* one ``basic.ack`` each for finished deliveries after it. An ack is
  never held back behind a long call: the broker counts unacked messages
  against the consumers' prefetch.

On rpcmq's py-amqp transport those frames go out in one write, packed by
its frame writer (``writes.FrameWriter.ack``).

A delivery still running is never covered by a multiple ack: every
delivery is registered (``delivered``) before its handler sees it, in
the broker's order, and one settled some other way (requeued, rejected,
acked by the dead-letter move) is only forgotten (``settled``) after its
own frame was written. The tag a multiple ack names is always one not
yet acked (the broker closes the channel otherwise).

Delivery tags belong to a channel; a delivery of a new channel (after a
reconnect) drops what was kept of the old one, whose unacked messages
the broker has requeued anyway.
"""

import collections
import threading
import time

from rpcmq.transport import raw

__all__ = ['Acks']

_RUNNING, _DONE, _GONE = 'running', 'done', 'gone'


class Acks:
    """The acks of the channel a listener consumes on."""

    def __init__(self):
        self._lock = threading.Lock()
        self._channel = None
        self._order = collections.deque()  # tags not yet released, in order
        self._state = {}  # tag -> _RUNNING | _DONE | _GONE
        self._running = 0  # tags in _state that are _RUNNING
        self._writing = False

    def delivered(self, channel, tag):
        """The broker delivered ``tag`` on ``channel`` (called in order,
        before anyone can settle it)."""
        with self._lock:
            if channel is not self._channel:
                self._channel = channel
                self._order.clear()
                self._state.clear()
                self._running = 0
            self._order.append(tag)
            self._state[tag] = _RUNNING
            self._running += 1

    def others_running(self):
        """True if deliveries besides the caller's own are running (a
        hint, read without the lock)."""
        return self._running > 1

    def settled(self, channel, tag):
        """``tag`` was settled another way; its frame is written."""
        with self._lock:
            if channel is self._channel and \
                    self._state.get(tag) is _RUNNING:
                self._state[tag] = _GONE
                self._running -= 1

    def ack(self, channel, tag):
        """Ack ``tag``: now, or by the worker writing acks already.
        Raises what writing raised (the connection is gone: the broker
        requeues whatever was not acked)."""
        with self._lock:
            kept = channel is self._channel and \
                self._state.get(tag) is _RUNNING
            if kept:
                self._state[tag] = _DONE
                self._running -= 1
                if self._writing:
                    return
                self._writing = True
                others = self._running
        if not kept:  # a delivery of an old channel, or not registered
            channel.basic_ack(tag)
            return
        try:
            if others:  # let those that are ready finish first
                time.sleep(0)
            while self._write():
                pass
        except BaseException:
            with self._lock:
                self._writing = False
            raise

    def _write(self):
        """Write the acks that gathered; False (and no longer the
        writer) if there were none."""
        with self._lock:
            channel, multiple, singles = self._channel, None, []
            order, state = self._order, self._state
            while order and state[order[0]] is not _RUNNING:
                tag = order.popleft()
                if state.pop(tag) is _DONE:
                    multiple = tag
            for tag in order:
                if state[tag] is _DONE:
                    singles.append(tag)
                    state[tag] = _GONE
            if multiple is None and not singles:
                self._writing = False
                return False
        acks = [(tag, False) for tag in singles]
        if multiple is not None:
            acks.insert(0, (multiple, True))
        write_acks(channel, acks)
        return True


def write_acks(channel, acks):
    """Write ``(delivery_tag, multiple)`` acks on ``channel``: in one
    write of frames packed by rpcmq's frame writer where the channel's
    connection has one (``writes.FrameWriter.ack``), else one
    ``basic_ack`` each."""
    writer = raw.writer_of(channel)
    if writer is not None:
        writer.ack(channel.channel_id, acks)
        return
    for tag, multiple in acks:
        channel.basic_ack(tag, multiple=multiple)
