"""Acks written together: never one for a delivery still running, never
one the broker does not know, none left behind."""

import random
import threading

import pytest

from rpcmq.transport import writes
from rpcmq.transport.acks import Acks


class Channel:
    """Acks as RabbitMQ takes them: a multiple ack settles every unacked
    delivery up to its tag, and its tag must be one not acked yet (the
    broker closes the channel otherwise)."""

    def __init__(self, block_first=False):
        self.unacked = set()
        self.running = set()  # handed to a worker that has not finished
        self.frames = []
        self.lock = threading.Lock()
        self.writing = threading.Event()
        self.go_on = threading.Event()
        if not block_first:
            self.go_on.set()

    def deliver(self, acks, tag):
        self.unacked.add(tag)
        self.running.add(tag)
        acks.delivered(self, tag)

    def basic_ack(self, tag, multiple=False):
        self.writing.set()
        assert self.go_on.wait(10)
        with self.lock:
            assert tag in self.unacked, 'unknown delivery tag %d' % tag
            gone = {t for t in self.unacked if t <= tag} if multiple \
                else {tag}
            assert not gone & self.running, 'acked while running: %s' % (
                gone & self.running)
            self.unacked -= gone
            self.frames.append((tag, multiple))


def finish(channel, acks, tag):
    with channel.lock:
        channel.running.discard(tag)
    acks.ack(channel, tag)


def test_one_worker_after_another_acks_each_delivery():
    acks, ch = Acks(), Channel()
    for tag in (1, 2, 3):
        ch.deliver(acks, tag)
    for tag in (1, 2, 3):
        finish(ch, acks, tag)
    assert ch.frames == [(1, True), (2, True), (3, True)]
    assert ch.unacked == set()


def test_deliveries_finished_while_an_ack_is_written_go_in_one_frame():
    acks, ch = Acks(), Channel(block_first=True)
    for tag in range(1, 6):
        ch.deliver(acks, tag)
    writer = threading.Thread(target=finish, args=(ch, acks, 1))
    writer.start()
    assert ch.writing.wait(10)  # the first ack is being written
    for tag in range(2, 6):
        finish(ch, acks, tag)  # returns at once: the writer takes them
    assert ch.frames == []
    ch.go_on.set()
    writer.join(10)
    assert ch.frames == [(1, True), (5, True)]
    assert ch.unacked == set()


def test_a_delivery_still_running_is_never_covered_nor_holds_others_back():
    acks, ch = Acks(), Channel()
    for tag in (1, 2, 3, 4):
        ch.deliver(acks, tag)
    finish(ch, acks, 2)  # 1 is a long call, still running
    finish(ch, acks, 3)
    assert ch.frames == [(2, False), (3, False)]
    assert ch.unacked == {1, 4}
    finish(ch, acks, 1)
    assert ch.frames[-1] == (1, True)  # 2 and 3 are not named again
    finish(ch, acks, 4)
    assert ch.unacked == set()


def test_a_delivery_settled_another_way_does_not_stop_the_run():
    acks, ch = Acks(), Channel()
    for tag in (1, 2, 3):
        ch.deliver(acks, tag)
    # 2 is requeued (its frame written), then forgotten here.
    with ch.lock:
        ch.unacked.discard(2)
        ch.running.discard(2)
    acks.settled(ch, 2)
    finish(ch, acks, 1)
    finish(ch, acks, 3)
    assert ch.frames == [(1, True), (3, True)]
    assert ch.unacked == set()


def test_after_a_reconnect_the_old_channel_is_forgotten():
    acks, old, new = Acks(), Channel(), Channel()
    old.deliver(acks, 1)
    new.deliver(acks, 1)  # the broker requeued what the old one held
    finish(old, acks, 1)  # written to the old channel as it is
    finish(new, acks, 1)
    assert old.frames == [(1, False)]
    assert new.frames == [(1, True)]


def test_a_failed_write_reaches_the_worker_and_the_next_ack_writes_again():
    acks, ch = Acks(), Channel()
    for tag in (1, 2):
        ch.deliver(acks, tag)
    ch.basic_ack, real = (lambda tag, multiple=False: (_ for _ in ()).throw(
        ConnectionResetError('connection reset'))), ch.basic_ack
    with pytest.raises(ConnectionResetError):
        finish(ch, acks, 1)
    ch.basic_ack = real
    finish(ch, acks, 2)  # not stuck behind a writer that died
    assert ch.frames == [(2, True)]


def test_many_workers_in_any_order_ack_every_delivery_once():
    acks, ch = Acks(), Channel()
    tags = list(range(1, 2001))
    for tag in tags:
        ch.deliver(acks, tag)
    random.Random(7).shuffle(tags)
    chunks = [tags[i::8] for i in range(8)]
    errors = []

    def worker(mine):
        try:
            for tag in mine:
                finish(ch, acks, tag)
        except AssertionError as exc:  # shown by the assertion below
            errors.append(exc)
    workers = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    [w.start() for w in workers]
    [w.join(60) for w in workers]
    assert errors == []
    assert ch.unacked == set()
    assert len(ch.frames) <= 2000


def test_on_rpcmqs_connection_the_acks_of_a_run_go_in_one_write():
    written = []

    class Writer(writes.FrameWriter):
        def __init__(self):
            pass

        def ack(self, channel_id, acks):
            written.append((channel_id, acks))

    class AmqpChannel(Channel):
        channel_id = 3

        def __init__(self):
            super().__init__()
            self.connection = type('Connection', (), {})()
            self.connection._frame_writer = Writer()

    acks, ch = Acks(), AmqpChannel()
    for tag in (1, 2, 3):
        ch.deliver(acks, tag)
    acks.ack(ch, 3)  # 1 and 2 still running: a single ack
    acks.ack(ch, 1)
    acks.ack(ch, 2)
    assert written == [(3, [(3, False)]), (3, [(1, True)]), (3, [(2, True)])]
    assert ch.frames == []  # basic_ack was never used
