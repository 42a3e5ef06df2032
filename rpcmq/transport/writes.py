"""Frame writes of one connection; publishes that come together go out in
one socket write.

py-amqp writes each message (method, header and body frames) with a
socket write of its own. On a server answering many calls at once, or a
client with many callers, those writes were a third of the server's time:
on loopback each ``send`` also runs the broker's side of TCP. Here the
connection's frame writer (``FrameWriter``, installed by
``transport.amqp``) keeps py-amqp's for single frames and adds
``publish``, which writes together the publishes that meet:

* each publisher packs its own message first (one that cannot be packed
  fails alone). One that finds nobody writing becomes the writer. With
  ``gather`` (other publishes are about to come: a server whose other
  deliveries are running) it first lets the ready ones run
  (``time.sleep(0)``: a green yield under eventlet, the GIL handed over
  under threads). It writes whatever gathered in one write, then what
  gathered meanwhile, for at most ``ROUNDS`` rounds, and hands the role
  on.
* a publisher that finds a writer busy leaves its message to it and waits
  until its round is written: ``publish`` returns once the message is
  written, or raises what writing it raised, as py-amqp's write does. No
  message is held back once its round can be written.
* or, given ``on_failure`` (a client's call, whose caller waits for its
  reply anyway), it does not wait: it returns at once, and if the write
  fails the writer calls ``on_failure`` (the caller is woken and sends
  the request again). A thread woken for nothing costs more than the
  write: a client's 16 callers spent 10% less CPU per call
  (docs/benchmarks.md). A writer does not hand its role on while such
  messages are left, since nobody would write them.

Every write to the socket, single frames included, is under one lock, so
heartbeats and other frames never land inside a round.

Publishes and acks are packed by ``frames`` (byte for byte py-amqp's
frames, packed faster); ``ack`` writes a run of acks in one write.

A write that fails part way has put some messages of its round on the
socket whole: those count as written, as a lone message written by
py-amqp would (the transport counts the bytes that left, ``sent``); the
others failed and were never whole on the wire, so the broker never took
them and they may be sent again. Without such a count every message of
a failed round counts as failed.
"""

import logging
import threading
import time

from amqp import method_framing

from rpcmq.transport import frames

__all__ = ['FrameWriter', 'ROUNDS']

LOG = logging.getLogger(__name__)

ROUNDS = 4  # rounds a writer writes for others before handing on
# to a publisher waiting for its own


class _Round:
    __slots__ = ('written', 'waiters')

    def __init__(self):
        self.written = False
        self.waiters = 0  # publishers waiting for this round


class _Message:
    __slots__ = ('data', 'on_failure', 'error')

    def __init__(self, data, on_failure):
        self.data = data
        self.on_failure = on_failure
        self.error = None  # what writing it raised


class FrameWriter:
    """A py-amqp frame writer (``frame_writer(connection, transport)``)
    with ``publish``."""

    def __init__(self, connection, transport):
        self._connection = connection
        self._transport = transport
        self._lock = threading.Lock()  # every write to the socket
        self._frame = method_framing.frame_writer(connection, transport)
        self._cond = threading.Condition(threading.Lock())
        self._pending = []  # the messages of the round gathering
        self._round = _Round()
        self._writing = False
        self._waiters = 0  # publishers waiting for their round

    def __call__(self, type_, channel, method_sig, args, content):
        with self._lock:
            return self._frame(type_, channel, method_sig, args, content)

    def ack(self, channel_id, acks):
        """Write ``basic.ack`` for each ``(delivery_tag, multiple)`` of
        ``acks`` on channel ``channel_id``, in order, in one write."""
        self._write(b''.join([frames.ack(channel_id, tag, multiple)
                              for tag, multiple in acks]))

    def _write(self, data):
        """One socket write, under the lock every write takes; counted as
        py-amqp counts its writes (heartbeats see it)."""
        with self._lock:
            self._transport.write(data)
            self._connection.bytes_sent += 1

    def publish(self, channel_id, args, body, properties, gather=False,
                on_failure=None):
        """Write ``basic.publish`` (``args`` serialized) of ``body`` with
        ``properties`` (see ``frames.publish``) on channel ``channel_id``;
        returns once written, or raises what writing it raised. A message
        that cannot be packed raises here, before it joins a round.

        With ``on_failure``, a publisher that finds a writer busy does not
        wait: it returns at once and, should the write fail,
        ``on_failure(exc)`` is called (in the writer's thread) instead.
        """
        mine = _Message(frames.publish(
            channel_id, self._connection.frame_max, args, body, properties),
            on_failure)
        self._join([mine], gather)
        if mine.error is not None:
            raise mine.error

    def publish_many(self, channel_id, publishes):
        """Write ``(args, body, properties)`` publishes in order,
        together; return ``(done, error)``: how many were written whole,
        and what stopped the rest (None if nothing did). One that cannot
        be packed stops those after it; those before it are written."""
        mine, error, frame_max = [], None, self._connection.frame_max
        for args, body, properties in publishes:
            try:
                data = frames.publish(channel_id, frame_max, args, body,
                                      properties)
            except Exception as exc:
                error = exc
                break
            mine.append(_Message(data, None))
        if mine:
            self._join(mine, False)
        for done, message in enumerate(mine):
            if message.error is not None:
                return done, message.error
        return len(mine), error

    def _join(self, mine, gather):
        """Add ``mine`` to the round gathering and return once it is
        written: by this thread, which becomes the writer if nobody is, or
        by the writer (see ``publish``)."""
        with self._cond:
            self._pending.extend(mine)
            round_ = self._round
            if self._writing and mine[0].on_failure is not None:
                return  # the writer writes it, or reports its failure
            mine[0].on_failure = None  # it waits: its failure is raised
            self._waiters += 1
            round_.waiters += 1
            try:
                while self._writing and not round_.written:
                    self._cond.wait()
            finally:
                self._waiters -= 1
                round_.waiters -= 1
            if not round_.written:
                self._writing = True
        if not round_.written:
            try:
                if gather:
                    time.sleep(0)
                self._write_rounds()
            finally:
                with self._cond:
                    if not round_.written:  # interrupted before writing:
                        left = set(map(id, mine))  # ...not later either
                        self._pending = [m for m in self._pending
                                         if id(m) not in left]
                    self._writing = False
                    if self._waiters:
                        self._cond.notify_all()

    def _write_rounds(self):
        """Write what gathered, round after round, until nothing is left
        or, after ``ROUNDS`` rounds, a publisher waiting for what is left
        can take over (one that did not wait has nobody to take over for
        it)."""
        rounds = 0
        while True:
            with self._cond:
                if not self._pending or \
                        (rounds >= ROUNDS and self._round.waiters):
                    return
                todo, self._pending = self._pending, []
                this, self._round = self._round, _Round()
            rounds += 1
            error = None
            try:
                self._write(b''.join(m.data for m in todo))
            except BaseException as exc:
                error = exc
                _failed(todo, getattr(self._transport, 'sent', 0), exc)
            finally:
                with self._cond:
                    this.written = True
                    if self._waiters:
                        self._cond.notify_all()
            if error is not None:
                _report(todo)
                if not isinstance(error, Exception):
                    raise error  # interrupted: stop writing


def _failed(messages, sent, exc):
    """A write of ``messages`` failed after ``sent`` bytes: those not
    wholly sent failed with ``exc``."""
    end = 0
    for message in messages:
        end += len(message.data)
        if end > sent:
            message.error = exc


def _report(messages):
    """Tell the publishers that did not wait that their write failed."""
    for message in messages:
        if message.error is not None and message.on_failure is not None:
            try:
                message.on_failure(message.error)
            except Exception:
                LOG.exception('reporting a failed write')
