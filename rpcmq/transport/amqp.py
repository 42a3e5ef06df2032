"""kombu's py-amqp transport, reading ahead from the socket.

py-amqp asks the socket for exactly the bytes it needs next: 7 for a frame
header, then the payload and its end octet. A message is three frames, so
every message delivered costs six ``recv`` calls (each a trip through the
kernel, a GIL release and, under eventlet, a hub round). Here each ``recv``
asks for up to ``READ_AHEAD`` bytes instead; py-amqp already keeps what it
did not use in its read buffer, so a burst of messages costs one ``recv``.
Nothing else changes: frames, timeouts and heartbeats are py-amqp's.
Its frame writer is ``writes.FrameWriter``: publishes that meet go out in
one socket write; writes count the bytes that left (``sent``), so that a
write failing part way says which of its messages left whole.

The transport is registered with kombu under the scheme ``rpcmqamqp`` so
that failover (``Connection.switch``, which re-reads the scheme from each
URL) keeps it.

A frame already whole in the read buffer is also returned without setting
the socket's timeout for it: py-amqp sets and resets the timeout around
every frame it reads, two system calls (each releasing the GIL) that
matter when a burst of replies meets many caller threads.

A frame is taken off the read buffer only once it is whole there. py-amqp
takes the header off first and puts it back on a socket timeout or error
only: anything else that interrupts a reader in the middle of a frame
(``eventlet.Timeout``, a greenlet killed, ``KeyboardInterrupt``; callers
read the reply connection themselves, see ``reply``) would lose the
header and leave the connection reading garbage.
"""

import contextlib
import struct

import amqp.transport
from amqp.exceptions import RecoverableConnectionError, UnexpectedFrame
from amqp.transport import to_host_port
from kombu.transport import TRANSPORT_ALIASES, pyamqp

from rpcmq.transport import inbound, writes
from rpcmq.transport.frames import FRAME_END, FRAME_HEADER

__all__ = ['SCHEME', 'Transport']

SCHEME = 'rpcmqamqp'
# Large enough for a burst of small messages, small enough that py-amqp's
# slicing of its bytes buffer stays cheap.
READ_AHEAD = 16384
_CHANNEL = struct.Struct('>H')


class _ReadAhead:

    sent = 0  # bytes of the last write that left whole (``writes``)

    def _setup_transport(self):
        super()._setup_transport()
        recv = self._quick_recv

        def read_ahead(n):
            return recv(n if n > READ_AHEAD else READ_AHEAD)
        self._quick_recv = read_ahead
        self._write = self._write_counted  # over TCP's sock.sendall

    def _write_counted(self, data):
        """Write ``data`` whole, as py-amqp does; ``sent`` counts the
        bytes that left, also when a later part of it fails."""
        view = memoryview(data)
        self.sent = 0
        while self.sent < len(view):
            self.sent += self._send_some(view[self.sent:])

    def having_timeout(self, timeout):
        if timeout is not None and self._frame_buffered():
            return contextlib.nullcontext(self.sock)
        return super().having_timeout(timeout)

    def read_frame(self, unpack=None):
        """The next frame as py-amqp's ``read_frame`` returns it (type,
        channel, payload); taken off the read buffer once it is whole
        there, with one slice instead of py-amqp's four reads."""
        self._fill(7, True)
        size = FRAME_HEADER.unpack_from(self._read_buffer)[2]
        self._fill(size + 8)
        buf = self._read_buffer
        self._read_buffer = buf[size + 8:]
        if buf[size + 7] != FRAME_END:
            raise UnexpectedFrame('Received frame_end %#04x while expecting '
                                  '0xce' % buf[size + 7])
        return buf[0], _CHANNEL.unpack_from(buf, 1)[0], buf[7:size + 7]

    def _fill(self, n, initial=False):
        """Make the read buffer hold ``n`` bytes, taking none off it
        (py-amqp's ``_read`` keeps what it got whatever interrupts it)."""
        if len(self._read_buffer) < n:
            self._read_buffer = self._read(n, initial) + self._read_buffer

    def _frame_buffered(self):
        """True if the read buffer holds a whole frame (no recv needed)."""
        buf = self._read_buffer
        if len(buf) < 7:
            return False
        return len(buf) >= FRAME_HEADER.unpack_from(buf)[2] + 8


def _closed():
    """What a write on a connection py-amqp closed raises (it drops its
    socket): a lost connection, as py-amqp's own writes say."""
    return RecoverableConnectionError('connection already closed')


class TCPTransport(_ReadAhead, amqp.transport.TCPTransport):

    def _send_some(self, view):
        sock = self.sock
        if sock is None:
            raise _closed()
        return sock.send(view)


class SSLTransport(_ReadAhead, amqp.transport.SSLTransport):

    def _send_some(self, view):
        # as py-amqp's SSLTransport._write
        sock = self.sock
        if sock is None:
            raise _closed()
        try:
            n = sock.write(view)
        except ValueError:  # the SSL object went with the connection
            n = 0
        if not n:
            raise OSError('Socket closed')
        return n


class Connection(pyamqp.Connection):
    """Reads ahead; writes publishes that meet together (``writes``);
    a message it cannot decode costs that message only (``inbound``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('frame_writer', writes.FrameWriter)
        kwargs.setdefault('frame_handler', inbound.frame_handler)
        super().__init__(*args, **kwargs)

    def Transport(self, host, connect_timeout, ssl=False, read_timeout=None,
                  write_timeout=None, socket_settings=None, **kwargs):
        if isinstance(ssl, dict) and 'server_hostname' in ssl:
            # Verify (and send as SNI) the name of the host connected to
            # now: kombu would keep the first failover host's name.
            ssl = dict(ssl, server_hostname=to_host_port(host)[0])
        cls = SSLTransport if ssl else TCPTransport
        return cls(host, connect_timeout=connect_timeout, ssl=ssl,
                   read_timeout=read_timeout, write_timeout=write_timeout,
                   socket_settings=socket_settings, **kwargs)


class Transport(pyamqp.Transport):
    Connection = Connection


TRANSPORT_ALIASES.setdefault(SCHEME, 'rpcmq.transport.amqp:Transport')
