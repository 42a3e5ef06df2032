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

Every write to the socket, single frames included, is under one lock, so
heartbeats and other frames never land inside a round.
"""

import threading
import time

from amqp import method_framing, spec

__all__ = ['FrameWriter', 'ROUNDS']

ROUNDS = 4  # rounds a writer writes for others before handing on


class _Round:
    __slots__ = ('written', 'error')

    def __init__(self):
        self.written = False
        self.error = None


class FrameWriter:
    """A py-amqp frame writer (``frame_writer(connection, transport)``)
    with ``publish``."""

    def __init__(self, connection, transport):
        self._socket_write = transport.write
        self._lock = threading.Lock()  # every write to the socket
        self._frame = method_framing.frame_writer(connection, transport)
        # py-amqp's packing into ``_packed`` (its "socket" is ``write``)
        self._pack_lock = threading.Lock()
        self._pack = method_framing.frame_writer(connection, self)
        self._packed = []
        self._cond = threading.Condition(threading.Lock())
        self._pending = []  # the packed messages of the round gathering
        self._round = _Round()
        self._writing = False

    def __call__(self, type_, channel, method_sig, args, content):
        with self._lock:
            return self._frame(type_, channel, method_sig, args, content)

    def write(self, data):
        """Where ``_pack`` puts a packed frame (a view of its buffer)."""
        self._packed.append(bytes(data))

    def publish(self, channel_id, args, message, gather=False):
        """Write ``basic.publish`` (``args`` serialized) with ``message``
        on channel ``channel_id``; returns once written. A message that
        cannot be packed raises here, before it joins a round."""
        with self._pack_lock:
            self._packed = []
            self._pack(1, channel_id, spec.Basic.Publish, args, message)
            data = b''.join(self._packed)
        with self._cond:
            self._pending.append(data)
            mine = self._round
            while self._writing and not mine.written:
                self._cond.wait()
            if mine.written:
                if mine.error is not None:
                    raise mine.error
                return
            self._writing = True
        try:
            if gather:
                time.sleep(0)
            self._write_rounds()
        finally:
            with self._cond:
                if not mine.written:  # interrupted before writing:
                    self._pending = [d for d in self._pending  # not later
                                     if d is not data]
                self._writing = False
                self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def _write_rounds(self):
        for _ in range(ROUNDS):
            with self._cond:
                todo, self._pending = self._pending, []
                this, self._round = self._round, _Round()
            if not todo:
                return
            try:
                with self._lock:
                    self._socket_write(b''.join(todo))
            except BaseException as exc:
                this.error = exc
            finally:
                with self._cond:
                    this.written = True
                    self._cond.notify_all()
            if this.error is not None:
                return
