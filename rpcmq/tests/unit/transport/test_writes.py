"""A connection's frame writer writes together the publishes that meet,
and keeps py-amqp's promises: each publisher returns once its message is
written or raises what writing it raised, frames come out whole and in
order, and nothing else lands inside a round."""

import struct
import threading
import time

import amqp
import pytest
from amqp import spec
from amqp.exceptions import FrameSyntaxError
from amqp.serialization import dumps

from rpcmq.transport import frames as amqp_frames
from rpcmq.transport import writes

PUBLISH = struct.pack('>HH', *spec.Basic.Publish)
WAIT = 10.0


class Connection:
    frame_max = 131072
    bytes_sent = 0


class Socket:
    """A transport whose writes can be held (``hold``) or made to fail
    (``fail``), after ``fail_after`` bytes if set; ``writes`` is every
    write, in order, and ``sent`` counts the bytes of the last that left,
    as rpcmq's transport does."""

    def __init__(self):
        self.writes = []
        self.hold = None      # an Event the next write waits for
        self.holding = threading.Event()
        self.fail = None      # raised by the next write to begin
        self.fail_after = 0   # ... once that many bytes of it left
        self.split = None     # (Event, Event): write in two halves
        self.sent = 0

    def write(self, data):
        data = bytes(data)
        self.sent = 0
        fail, self.fail = self.fail, None  # as things were when it began
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            assert hold.wait(WAIT)
        if fail is not None:
            if self.fail_after:
                self.writes.append(data[:self.fail_after])
                self.sent = self.fail_after
            raise fail
        if self.split is not None:
            (half_written, go_on), self.split = self.split, None
            self.writes.append(data[:5])
            half_written.set()
            assert go_on.wait(WAIT)
            self.writes[-1] += data[5:]
            return
        self.writes.append(data)


def frames(data):
    """The frames of ``data`` as (type, channel, payload); each whole."""
    out = []
    while data:
        ftype, channel, size = struct.unpack_from('>BHI', data)
        assert data[7 + size] == 0xce, 'a frame is cut or overlapped'
        out.append((ftype, channel, data[7:7 + size]))
        data = data[8 + size:]
    return out


def bodies(data):
    """The bodies of the messages published in ``data``, in order."""
    fs, out = frames(data), []
    while fs:
        (t1, ch, method), (t2, _, _), (t3, _, body) = fs[:3]
        assert (t1, t2, t3) == (1, 2, 3) and method.startswith(PUBLISH)
        out.append(body.decode())
        fs = fs[3:]
    return out


def publisher(writer, text, errors=None, gather=False, failures_to=None):
    """A publish of ``text``; with ``failures_to`` one that does not wait
    for a busy writer, its failure appended there as (text, exc)."""
    args = dumps('Bssbb', (0, '', 'reply-queue', False, False))
    properties = {'content_type': 'application/json'}
    on_failure = None if failures_to is None else \
        (lambda exc: failures_to.append((text, exc)))

    def run():
        try:
            writer.publish(1, args, text.encode(), properties, gather,
                           on_failure)
        except Exception as exc:
            if errors is None:
                raise
            errors[text] = exc
    return run


def wait_for(predicate):
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.001)


@pytest.fixture
def sock():
    return Socket()


@pytest.fixture
def writer(sock):
    return writes.FrameWriter(Connection(), sock)


def start(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def busy(writer, sock):
    """A publisher of 'first' held inside its write: (the Event that
    lets the write go on, its thread)."""
    hold = sock.hold = threading.Event()
    first = start(publisher(writer, 'first'))
    assert sock.holding.wait(WAIT)  # the first writer is in its write
    return hold, first


def test_a_lone_publish_is_written_at_once(writer, sock):
    publisher(writer, 'one')()
    assert [bodies(w) for w in sock.writes] == [['one']]


def test_publishes_that_meet_a_busy_writer_go_out_in_one_write(writer,
                                                                 sock):
    hold, first = busy(writer, sock)
    others = [start(publisher(writer, 'm%d' % i)) for i in range(5)]
    wait_for(lambda: len(writer._pending) == 5)
    hold.set()
    for thread in [first] + others:
        thread.join(WAIT)
        assert not thread.is_alive(), 'a publisher never returned'
    assert len(sock.writes) == 2 and bodies(sock.writes[0]) == ['first']
    assert sorted(bodies(sock.writes[1])) == ['m%d' % i for i in range(5)]


def test_a_failed_write_is_raised_in_each_publisher_of_its_round(writer,
                                                                 sock):
    hold, first = busy(writer, sock)
    errors = {}
    others = [start(publisher(writer, name, errors))
              for name in ('a', 'b')]
    wait_for(lambda: len(writer._pending) == 2)
    sock.fail = ConnectionResetError('connection reset by peer')
    hold.set()
    for thread in [first] + others:
        thread.join(WAIT)
    assert sorted(errors) == ['a', 'b']
    assert all(isinstance(e, ConnectionResetError) for e in errors.values())
    # The writer's role was handed back: the next publish is written.
    publisher(writer, 'after')()
    assert bodies(sock.writes[-1]) == ['after']


def test_the_writers_own_failure_is_raised_to_it(writer, sock):
    sock.fail = BrokenPipeError('broken pipe')
    with pytest.raises(BrokenPipeError):
        publisher(writer, 'lost')()
    publisher(writer, 'next')()
    assert [bodies(w) for w in sock.writes] == [['next']]


def test_no_other_frame_lands_inside_a_round(writer, sock):
    half_written, go_on = threading.Event(), threading.Event()
    sock.split = (half_written, go_on)
    first = start(publisher(writer, 'first'))
    assert half_written.wait(WAIT)  # the round is half on the socket
    heartbeat = start(lambda: writer(8, 0, None, None, None))
    heartbeat.join(0.2)  # it must wait for the round: not yet written
    assert len(sock.writes) == 1
    go_on.set()
    first.join(WAIT)
    heartbeat.join(WAIT)
    stream = b''.join(sock.writes)
    assert [f[0] for f in frames(stream)] == [1, 2, 3, 8]


def test_a_gathering_writer_takes_the_publishes_that_are_ready(
        writer, sock, monkeypatch):
    ready = []

    def let_others_run(seconds):
        assert seconds == 0
        ready.extend(start(publisher(writer, 'r%d' % i)) for i in range(3))
        wait_for(lambda: len(writer._pending) == 4)
    monkeypatch.setattr(writes.time, 'sleep', let_others_run)
    publisher(writer, 'gatherer', gather=True)()
    for thread in ready:
        thread.join(WAIT)
    assert len(sock.writes) == 1
    assert sorted(bodies(sock.writes[0])) == ['gatherer', 'r0', 'r1', 'r2']


def test_a_writer_interrupted_before_writing_publishes_nothing_later(
        writer, sock, monkeypatch):
    class Interrupted(BaseException):
        pass

    def interrupt(seconds):
        raise Interrupted()
    monkeypatch.setattr(writes.time, 'sleep', interrupt)
    with pytest.raises(Interrupted):
        publisher(writer, 'interrupted', gather=True)()
    publisher(writer, 'next')()
    assert [bodies(w) for w in sock.writes] == [['next']]


def test_many_threads_each_see_their_messages_written_in_order(writer,
                                                               sock):
    def many(name):
        def run():
            for i in range(200):
                publisher(writer, '%s.%03d' % (name, i))()
        return run
    threads = [start(many('t%d' % t)) for t in range(8)]
    for thread in threads:
        thread.join(WAIT * 3)
        assert not thread.is_alive()
    written = bodies(b''.join(sock.writes))
    assert len(written) == 1600
    for t in range(8):
        mine = [b for b in written if b.startswith('t%d.' % t)]
        assert mine == sorted(mine) and len(mine) == 200


def test_a_message_that_cannot_be_packed_fails_alone(writer, sock):
    hold, first = busy(writer, sock)
    other = start(publisher(writer, 'other'))
    wait_for(lambda: len(writer._pending) == 1)
    bad = {'application_headers': {'h': object()}}
    with pytest.raises(FrameSyntaxError):  # in its own publisher
        writer.publish(1, dumps('Bssbb', (0, '', 'q', False, False)), b'x',
                       bad)
    hold.set()
    first.join(WAIT)
    other.join(WAIT)
    assert [bodies(w) for w in sock.writes] == [['first'], ['other']]


def test_a_publisher_that_need_not_wait_leaves_its_message_to_the_writer(
        writer, sock):
    hold, first = busy(writer, sock)
    failures = []
    quick = start(publisher(writer, 'quick', failures_to=failures))
    quick.join(WAIT)
    assert not quick.is_alive(), 'it waited for the busy writer'
    assert sock.writes == [] and writer._waiters == 0
    hold.set()
    first.join(WAIT)
    assert [bodies(w) for w in sock.writes] == [['first'], ['quick']]
    assert failures == []


def test_a_failed_write_is_reported_to_publishers_that_did_not_wait(
        writer, sock):
    hold, first = busy(writer, sock)
    failures = []
    for name in ('a', 'b'):
        publisher(writer, name, failures_to=failures)()  # returns at once
    sock.fail = ConnectionResetError('connection reset by peer')
    hold.set()
    first.join(WAIT)
    assert [(name, type(exc)) for name, exc in failures] == [
        ('a', ConnectionResetError), ('b', ConnectionResetError)]
    assert [bodies(w) for w in sock.writes] == [['first']]


def test_the_writer_stays_while_messages_nobody_waits_for_are_left(
        writer, sock, monkeypatch):
    """More rounds than ``ROUNDS`` come in while it writes, each from a
    publisher that did not wait: nobody else would write them."""
    real_write, more = sock.write, iter(range(writes.ROUNDS + 3))

    def write_and_take_another(data):
        real_write(data)
        k = next(more, None)
        if k is not None:
            publisher(writer, 'late%d' % k, failures_to=[])()
    monkeypatch.setattr(sock, 'write', write_and_take_another)
    publisher(writer, 'first')()
    written = [b for w in sock.writes for b in bodies(w)]
    assert written == ['first'] + ['late%d' % k
                                   for k in range(writes.ROUNDS + 3)]


def test_messages_that_left_whole_before_a_write_failed_count_as_written(
        writer, sock):
    """A write that fails part way: the messages wholly on the socket
    before the failure are written (the broker may have them: never sent
    twice), the one cut and those after it failed (never whole on the
    wire: sent again is safe)."""
    hold, first = busy(writer, sock)
    errors, failures = {}, []
    waiting = [start(publisher(writer, name, errors))
               for name in ('whole-1', 'whole-2')]
    wait_for(lambda: len(writer._pending) == 2)
    publisher(writer, 'cut', failures_to=failures)()
    publisher(writer, 'after', failures_to=failures)()
    whole = sum(len(m.data) for m in writer._pending[:2])
    sock.fail = ConnectionResetError('connection reset by peer')
    sock.fail_after = whole + 5
    hold.set()
    for thread in [first] + waiting:
        thread.join(WAIT)
    assert errors == {}
    assert [name for name, _ in failures] == ['cut', 'after']
    assert sorted(bodies(sock.writes[1][:whole])) == ['whole-1', 'whole-2']


def test_a_writer_that_fails_raises_and_is_not_told_twice(writer, sock):
    failures = []
    sock.fail = BrokenPipeError('broken pipe')
    with pytest.raises(BrokenPipeError):
        publisher(writer, 'alone', failures_to=failures)()
    assert failures == []


def many(texts, bad_at=None):
    """``publish_many`` arguments for ``texts``; the one at ``bad_at``
    cannot be packed."""
    args = dumps('Bssbb', (0, '', 'events', False, False))
    out = []
    for i, text in enumerate(texts):
        headers = {'h': object()} if i == bad_at else {}
        out.append((args, text.encode(), {'application_headers': headers}))
    return out


def test_many_publishes_go_out_in_one_write(writer, sock):
    assert writer.publish_many(1, many(['a', 'b', 'c'])) == (3, None)
    assert [bodies(w) for w in sock.writes] == [['a', 'b', 'c']]


def test_many_publishes_join_a_busy_writers_next_round(writer, sock):
    hold, first = busy(writer, sock)
    result = []
    other = start(lambda: result.append(
        writer.publish_many(1, many(['a', 'b']))))
    wait_for(lambda: len(writer._pending) == 2)
    hold.set()
    first.join(WAIT)
    other.join(WAIT)
    assert result == [(2, None)]
    assert [bodies(w) for w in sock.writes] == [['first'], ['a', 'b']]


def test_a_publish_that_cannot_be_packed_stops_those_after_it(writer,
                                                              sock):
    done, error = writer.publish_many(1, many(['a', 'b', 'c', 'd'],
                                              bad_at=2))
    assert done == 2 and isinstance(error, FrameSyntaxError)
    assert [bodies(w) for w in sock.writes] == [['a', 'b']]


def test_many_publishes_cut_by_a_failed_write_say_how_many_left_whole(
        writer, sock):
    publishes = many(['a', 'b', 'c'])
    sock.fail = ConnectionResetError('connection reset by peer')
    one = len(amqp_frames.publish(1, Connection.frame_max, *publishes[0]))
    sock.fail_after = one + 3  # 'a' whole, 'b' cut
    done, error = writer.publish_many(1, publishes)
    assert done == 1 and isinstance(error, ConnectionResetError)
    assert bodies(sock.writes[0][:one]) == ['a']


def test_acks_are_the_frames_py_amqp_would_write_in_one_write(writer, sock):
    writer.ack(7, [(2 ** 40 + 3, True), (5, False), (9, False)])
    theirs = Socket()
    py_amqp = amqp.method_framing.frame_writer(Connection(), theirs)
    for tag, multiple in [(2 ** 40 + 3, True), (5, False), (9, False)]:
        py_amqp(1, 7, spec.Basic.Ack, dumps('Lb', (tag, multiple)), None)
    assert sock.writes == [b''.join(theirs.writes)]
    assert writer._connection.bytes_sent == 1  # heartbeats see it


def test_no_ack_lands_inside_a_round(writer, sock):
    hold, first = busy(writer, sock)
    acking = start(lambda: writer.ack(1, [(1, False)]))
    hold.set()
    first.join(WAIT)
    acking.join(WAIT)
    assert [len(frames(w)) for w in sock.writes] == [3, 1]


def test_a_failed_ack_write_is_raised(writer, sock):
    sock.fail = OSError('connection reset')
    with pytest.raises(OSError, match='connection reset'):
        writer.ack(1, [(1, False)])
