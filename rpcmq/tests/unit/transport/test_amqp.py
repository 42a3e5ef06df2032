"""The read-ahead py-amqp transport reads frames exactly as py-amqp does:
several frames in one segment, a frame split across segments with a read
timeout in between, and frames larger than the read-ahead size; and a
frame survives whatever interrupts its reader in the middle of it."""

import socket
import struct
import threading

import pytest
from amqp.exceptions import UnexpectedFrame
from kombu.transport import TRANSPORT_ALIASES

from rpcmq.transport import amqp as fast


def frame(channel, payload, ftype=1):
    return struct.pack('>BHI', ftype, channel, len(payload)) + payload + \
        b'\xce'


@pytest.fixture
def peer():
    """A connected (our transport, server-side socket) pair."""
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    accepted = []
    thread = threading.Thread(
        target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    transport = fast.TCPTransport('127.0.0.1:%d' % port, connect_timeout=5)
    transport.connect()
    thread.join(5)
    yield transport, accepted[0]
    transport.close()
    accepted[0].close()
    listener.close()


def test_scheme_is_registered_with_kombu():
    assert TRANSPORT_ALIASES[fast.SCHEME] == 'rpcmq.transport.amqp:Transport'


def test_many_frames_in_one_segment_come_out_one_by_one(peer):
    transport, server = peer
    payloads = [b'm%d' % i * (i + 1) for i in range(50)]
    server.sendall(b''.join(frame(i, p) for i, p in enumerate(payloads)))
    for i, payload in enumerate(payloads):
        with transport.having_timeout(2):
            ftype, channel, got = transport.read_frame()
        assert (ftype, channel, bytes(got)) == (1, i, payload)
    assert transport._read_buffer == b''


def test_a_split_frame_survives_a_read_timeout(peer):
    transport, server = peer
    whole = frame(3, b'x' * 1000)
    server.sendall(frame(1, b'first') + whole[:500])
    with transport.having_timeout(2):
        assert bytes(transport.read_frame()[2]) == b'first'
    with pytest.raises(socket.timeout):
        with transport.having_timeout(0.05):
            transport.read_frame()
    server.sendall(whole[500:])
    with transport.having_timeout(2):
        assert bytes(transport.read_frame()[2]) == b'x' * 1000


def test_frames_larger_than_the_read_ahead(peer):
    transport, server = peer
    big = bytes(range(256)) * (3 * fast.READ_AHEAD // 256)
    sender = threading.Thread(
        target=server.sendall, args=(frame(1, big) + frame(2, b'after'),))
    sender.start()
    with transport.having_timeout(5):
        assert bytes(transport.read_frame()[2]) == big
    with transport.having_timeout(5):
        assert bytes(transport.read_frame()[2]) == b'after'
    sender.join(5)


def test_a_buffered_frame_leaves_the_socket_timeout_alone(peer):
    transport, server = peer
    server.sendall(frame(1, b'a') + frame(1, b'b'))
    with transport.having_timeout(2):
        transport.read_frame()
    # 'b' is whole in the buffer: no recv, so no timeout to set
    assert transport._frame_buffered()
    with transport.having_timeout(2) as sock:
        assert sock.gettimeout() is None
        assert bytes(transport.read_frame()[2]) == b'b'
    assert not transport._frame_buffered()


class Interrupted(BaseException):
    """What may be thrown into a reader anywhere: ``eventlet.Timeout``, a
    greenlet killed, ``KeyboardInterrupt``."""


def test_a_frame_survives_a_reader_interrupted_in_its_middle(peer):
    transport, server = peer
    whole = frame(3, b'x' * 1000)
    server.sendall(whole[:500])  # the header and half the payload
    recv, calls = transport._quick_recv, []

    def interrupted_on_the_second_recv(n):
        calls.append(n)
        if len(calls) > 1:
            raise Interrupted()
        return recv(n)
    transport._quick_recv = interrupted_on_the_second_recv
    with pytest.raises(Interrupted):
        with transport.having_timeout(2):
            transport.read_frame()
    transport._quick_recv = recv
    server.sendall(whole[500:] + frame(4, b'next'))
    with transport.having_timeout(2):
        assert bytes(transport.read_frame()[2]) == b'x' * 1000
    with transport.having_timeout(2):
        assert bytes(transport.read_frame()[2]) == b'next'


def test_a_frame_without_its_end_octet_is_refused_as_py_amqp_refuses_it(
        peer):
    transport, server = peer
    server.sendall(frame(3, b'ok', ftype=2) + frame(1, b'bad')[:-1] + b'\x00')
    with transport.having_timeout(2):
        assert transport.read_frame() == (2, 3, b'ok')
    with pytest.raises(UnexpectedFrame,
                       match='frame_end 0x00 while expecting 0xce'):
        with transport.having_timeout(2):
            transport.read_frame()
