"""The pipelined confirming publisher against a fake broker connection.

Every cast ends confirmed, raised to its caller, or still tracked for
resend. The fake speaks the py-amqp surface the publisher uses: writes
through ``channel.send_method``, acks, nacks and returns through
``channel.events`` callbacks run inside ``drain_events`` (in the reader
thread), and a lost connection raised from ``drain_events``. Tests wait on
the fake's condition, never on sleeps.
"""

import collections
import logging
import queue
import socket
import threading
import time
import types

import kombu
import pytest

from rpcmq.exceptions import BrokerUnreachable, TransportError
from rpcmq.transport.confirms import ConfirmingPublisher

pytestmark = pytest.mark.timeout(60)

WAIT = 5
QUEUE = kombu.Queue('q', kombu.Exchange('x', type='topic'), routing_key='q')


class Broker:
    """What the test controls and sees; every change notifies ``cond``."""

    def __init__(self):
        self.cond = threading.Condition()
        self.channels = []          # confirm channels, in opening order
        self.reachable = True
        self.connect_gate = threading.Event()  # cleared: connecting hangs
        self.connect_gate.set()
        self.connecting = threading.Event()    # a connect attempt began
        self.fail_writes = 0        # the next N writes raise
        self.stalled = None         # a channel whose writes block (full
        self.blocked = 0            # socket); writers blocked right now
        self.declared = []
        self.forgotten = 0
        self.on_write = None        # called with each body, before writing
        self.write_times = []       # time.monotonic() of every write
        self.connect_times = []     # ... of every connect attempt

    def wait_for(self, predicate, timeout=WAIT):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), \
                'not so; writes per channel: %r' % [
                    c.writes for c in self.channels]

    def set(self, **changes):
        with self.cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self.cond.notify_all()

    @property
    def channel(self):
        return self.channels[-1]

    def deliver(self, event, *args, channel=None):
        """Run the channel's ``event`` callbacks in the reader thread, the
        way py-amqp does inside drain_events; wait until they ran."""
        channel = channel or self.channel
        done = threading.Event()

        def fire():
            for callback in list(channel.events[event]):
                callback(*args)
        channel.conn.inbox.put((fire, done))
        assert done.wait(WAIT), 'the reader did not run %s' % event

    def ack(self, tag, multiple=False, channel=None):
        self.deliver('basic_ack', tag, multiple, channel=channel)

    def nack(self, tag, multiple=False, channel=None):
        self.deliver('basic_nack', tag, multiple, channel=channel)

    def ack_all(self, channel=None):
        channel = channel or self.channel
        self.ack(len(channel.writes), True, channel=channel)

    def lose(self):
        """The connection drops: the reader's drain_events raises."""
        self.channel.conn.inbox.put(ConnectionResetError('connection lost'))


class Channel:

    def __init__(self, conn):
        self.conn, self.broker = conn, conn.broker
        self.events = collections.defaultdict(set)
        self.writes = []  # bodies, in order: delivery tag N is writes[N-1]
        self.confirming = False

    def confirm_select(self):
        self.confirming = True

    def send_method(self, sig, fmt, args, msg):
        broker = self.broker
        if broker.on_write is not None:
            broker.on_write(msg.body)
        with broker.cond:
            broker.blocked += 1
            broker.cond.notify_all()
            broker.cond.wait_for(
                lambda: broker.stalled is not self or self.conn.dead)
            broker.blocked -= 1
            if self.conn.dead:
                raise ConnectionResetError('write on a closed connection')
            if broker.fail_writes:
                broker.fail_writes -= 1
                raise BrokenPipeError('write failed')
            if msg.body == b'unwritable':
                raise TypeError('cannot serialize')
            self.writes.append(msg.body)
            broker.write_times.append(time.monotonic())
            self.mandatory = args[3]
            self.last_properties = msg.properties
            broker.cond.notify_all()


class Connection:

    def __init__(self, broker):
        self.broker = broker
        self.inbox = queue.Queue()
        self.dead = self.released = False

    def channel(self):
        channel = Channel(self)
        with self.broker.cond:
            self.broker.channels.append(channel)
            self.broker.cond.notify_all()
        return channel

    def drain_events(self, timeout=None):
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise socket.timeout('timed out') from None
        if isinstance(item, BaseException):
            raise item
        fire, done = item
        try:
            fire()
        finally:
            done.set()

    def heartbeat_check(self):
        pass

    def collect(self):
        with self.broker.cond:
            self.dead = True
            self.broker.cond.notify_all()

    def release(self):
        self.released = True
        self.collect()


class Driver:
    """The part of KombuDriver the publisher uses."""

    url = 'fake://broker/'
    retry_policy = {'interval_start': 0.01, 'interval_step': 0.01,
                    'interval_max': 0.05, 'max_retries': None}

    def __init__(self, broker):
        self.broker = broker

    def connection(self):
        return Connection(self.broker)

    def ensure_connection(self, conn, errback):
        while True:
            self.broker.connecting.set()
            with self.broker.cond:
                self.broker.connect_times.append(time.monotonic())
            assert self.broker.connect_gate.wait(30)
            if self.broker.reachable:
                return conn
            errback(ConnectionRefusedError('connection refused'), 0.01)
            with self.broker.cond:  # the retry interval
                self.broker.cond.wait(0.01)

    def retry_or_give_up(self, exc, interval, deadline):
        if deadline is not None and time.monotonic() + interval > deadline:
            raise BrokerUnreachable(url=self.url, reason=str(exc))

    def recoverable_errors(self):
        return (OSError,)

    def declare(self, entities, deadline=None):
        with self.broker.cond:
            self.broker.declared.extend(e.name for e in entities)

    def forget_declarations(self):
        with self.broker.cond:
            self.broker.forgotten += 1


@pytest.fixture
def broker():
    return Broker()


@pytest.fixture
def make(broker):
    made = []

    def make(window=1024):
        publisher = ConfirmingPublisher(Driver(broker), window=window)
        made.append(publisher)
        return publisher
    yield make
    broker.set(reachable=True, stalled=None)
    broker.connect_gate.set()
    for publisher in made:
        publisher.close(timeout=0)


def soon(seconds=WAIT):
    return time.monotonic() + seconds


def publish(publisher, body, **kw):
    kw.setdefault('deadline', soon())
    publisher.publish(body, '', 'q', **kw)


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a thread; the result is (thread, outcome list)."""
    outcome = []

    def run():
        try:
            outcome.append(('returned', fn(*args, **kwargs)))
        except Exception as exc:
            outcome.append(('raised', exc))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_casts_are_written_in_order_and_flushed_once_acked(make, broker):
    pub = make()
    for body in (b'a', b'b', b'c'):
        publish(pub, body)
    assert broker.channel.writes == [b'a', b'b', b'c']
    assert broker.channel.confirming
    assert not pub.flush(0)
    broker.ack(2, multiple=True)
    assert not pub.flush(0)
    broker.ack(3)
    assert pub.flush(WAIT)


def test_a_nacked_cast_is_sent_again(make, broker):
    pub = make()
    for body in (b'a', b'b', b'c'):
        publish(pub, body)
    broker.ack(1)
    broker.nack(2)
    broker.ack(3)
    assert not pub.flush(0)
    broker.wait_for(lambda: broker.channel.writes[3:] == [b'b'])
    assert len(broker.channels) == 1
    broker.ack(4)
    assert pub.flush(WAIT)


def test_nacked_casts_are_sent_again_after_a_pause_not_at_once(make,
                                                               broker):
    """A quorum queue without a leader (a node just died) nacks every
    persistent cast; sending them straight back made thousands of nacks a
    second. Resends wait ``nack_backoff`` after the last nack."""
    pub = make()
    pub.nack_backoff = 0.3
    publish(pub, b'a')
    broker.nack(1)
    nacked_at = time.monotonic()
    broker.wait_for(lambda: broker.channel.writes == [b'a', b'a'])
    assert broker.write_times[1] - nacked_at >= 0.3
    broker.nack(2)
    nacked_at = time.monotonic()
    broker.wait_for(lambda: len(broker.channel.writes) == 3)
    assert broker.write_times[2] - nacked_at >= 0.3
    broker.ack(3)
    assert pub.flush(WAIT)


def test_a_channel_that_keeps_refusing_a_cast_is_replaced(make, broker):
    """After a quorum queue's leader died, RabbitMQ 3.10 can leave a
    channel refusing every cast to that queue while new channels are
    served (CI saw one cast nacked every 0.5 s for a minute). A cast
    refused ``nacks_per_channel`` times goes out on a new connection; the
    casts the old channel had not confirmed go with it."""
    pub = make()
    pub.nack_backoff = 0.01
    publish(pub, b'other')
    publish(pub, b'stuck')
    first = broker.channel
    for n in range(1, pub.nacks_per_channel + 1):
        # The stuck cast is the last write: its tag is the count of writes.
        broker.wait_for(lambda n=n: first.writes.count(b'stuck') == n)
        broker.nack(len(first.writes), channel=first)
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    sorted(broker.channel.writes) == [b'other', b'stuck'])
    assert first.conn.dead
    broker.ack_all()
    assert pub.flush(WAIT)
    assert len(broker.channels) == 2


def test_after_a_lost_connection_the_reconnect_waits_a_moment(make, broker):
    """Reconnecting within milliseconds lands on a live node before its
    quorum queues have a new leader: hold the retry interval first."""
    pub = make()
    pub.driver.retry_policy = dict(Driver.retry_policy, interval_start=0.3)
    publish(pub, b'a')
    assert len(broker.connect_times) == 1
    lost_at = time.monotonic()
    broker.lose()
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    broker.channel.writes == [b'a'])
    assert broker.connect_times[1] - lost_at >= 0.3
    broker.ack(1)
    assert pub.flush(WAIT)


def test_a_new_cast_is_kept_when_resending_a_nacked_one_fails(make, broker):
    """The resend of a nacked cast fails while a new one is published: the
    new one is tracked and sent on the next channel, not lost."""
    pub = make()
    publish(pub, b'nacked')
    broker.set(fail_writes=1)
    broker.nack(1)
    publish(pub, b'new')
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    sorted(broker.channel.writes) == [b'nacked', b'new'])
    assert not pub.flush(0)
    broker.ack_all()
    assert pub.flush(WAIT)


def test_a_connection_lost_under_a_writer_loses_no_cast(make, broker):
    """The reader sees the connection drop while another thread writes (a
    nacked cast again): nothing is written to a cleared channel, and both
    casts go out on the next one."""
    pub = make()
    publish(pub, b'nacked')
    lost = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record):
            if 'lost' in record.getMessage():
                lost.set()

    def on_write(body):
        broker.on_write = None
        broker.lose()
        if threading.current_thread().name != 'rpcmq-confirms':
            assert lost.wait(WAIT)  # the reader has seen it

    handler = Seen()
    logging.getLogger('rpcmq.transport.confirmreader').addHandler(handler)
    try:
        broker.set(on_write=on_write)
        broker.nack(1)
        publish(pub, b'new')
        broker.wait_for(lambda: len(broker.channels) == 2 and
                        sorted(broker.channel.writes) == [b'nacked', b'new'])
    finally:
        logging.getLogger('rpcmq.transport.confirmreader').removeHandler(handler)
    broker.ack_all()
    assert pub.flush(WAIT)


def test_a_failed_write_is_sent_again_on_a_new_channel(make, broker):
    pub = make()
    publish(pub, b'a', declare=(QUEUE,))
    broker.set(fail_writes=1)
    publish(pub, b'b', declare=(QUEUE,))  # written once it returns
    first, second = broker.channels
    assert first.writes == [b'a']
    assert second.writes == [b'a', b'b']
    assert second.mandatory and 'message_id' in second.last_properties
    # The broker may have lost our entities: declared again first.
    assert broker.forgotten == 1 and broker.declared.count('q') >= 3
    assert not pub.flush(0)
    broker.ack_all()
    assert pub.flush(WAIT)


def test_every_unconfirmed_cast_is_resent_after_a_lost_connection(
        make, broker):
    pub = make()
    for i in range(5):
        publish(pub, b'%d' % i)
    broker.ack(2, multiple=True)
    broker.lose()
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    broker.channel.writes == [b'2', b'3', b'4'])
    assert broker.channels[0].conn.dead
    assert not pub.flush(0.1)
    broker.ack(2, multiple=True)
    assert not pub.flush(0)
    broker.ack(3)
    assert pub.flush(WAIT)


def test_an_unreachable_broker_fails_the_cast_in_time_and_never_sends_it(
        make, broker):
    pub = make()
    broker.set(reachable=False)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as err:
        publish(pub, b'lost', deadline=soon(0.3))
    assert time.monotonic() - started < 0.3 + 1
    assert 'connection refused' in str(err.value)
    broker.set(reachable=True)
    publish(pub, b'later')
    broker.ack_all()
    assert pub.flush(WAIT)
    assert [c.writes for c in broker.channels] == [[b'later']]


def test_a_short_deadline_is_not_held_by_a_slow_reconnect(make, broker):
    pub = make()
    publish(pub, b'a')
    broker.connect_gate.clear()
    broker.connecting.clear()
    broker.lose()
    assert broker.connecting.wait(WAIT)  # reconnecting, and stuck there
    started = time.monotonic()
    thread, outcome = in_thread(publish, pub, b'b', deadline=soon(0.3))
    thread.join(3)
    assert not thread.is_alive(), 'publish waited past its deadline'
    assert time.monotonic() - started < 0.3 + 1
    assert outcome[0][0] == 'raised'
    assert isinstance(outcome[0][1], TransportError)
    broker.connect_gate.set()
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    broker.channel.writes == [b'a'])
    broker.ack_all()
    assert pub.flush(WAIT)
    assert broker.channel.writes == [b'a']  # b raised: never sent


def test_acks_are_read_while_a_writer_is_blocked(make, broker):
    pub = make()
    publish(pub, b'a')
    broker.set(stalled=broker.channel)  # the socket is full
    thread, outcome = in_thread(publish, pub, b'b')
    broker.wait_for(lambda: broker.blocked == 1)
    broker.ack(1)  # the reader still runs callbacks
    assert not pub.flush(0)
    broker.set(stalled=None)
    thread.join(WAIT)
    assert outcome == [('returned', None)]
    broker.ack(2)
    assert pub.flush(WAIT)


def test_a_writer_stuck_on_a_lost_connection_does_not_stop_the_reconnect(
        make, broker):
    """Its late failure belongs to the old channel: the new one stays."""
    pub = make()
    publish(pub, b'a')
    broker.set(stalled=broker.channel)
    thread, outcome = in_thread(publish, pub, b'b')
    broker.wait_for(lambda: broker.blocked == 1)
    broker.lose()  # the reader reconnects; the stuck write fails
    thread.join(WAIT)
    assert outcome == [('returned', None)]
    assert len(broker.channels) == 2
    assert broker.channel.writes == [b'a', b'b']
    broker.ack_all()
    assert pub.flush(WAIT)
    assert len(broker.channels) == 2


def test_a_full_window_waits_for_room_then_raises_at_the_deadline(
        make, broker):
    pub = make(window=2)
    publish(pub, b'a')
    publish(pub, b'b')
    started = time.monotonic()
    with pytest.raises(TransportError):
        publish(pub, b'c', deadline=soon(0.2))
    assert 0.2 <= time.monotonic() - started < 0.2 + 1
    thread, outcome = in_thread(publish, pub, b'd')
    broker.ack(1)
    thread.join(WAIT)
    assert outcome == [('returned', None)]
    assert broker.channel.writes == [b'a', b'b', b'd']
    broker.ack(3, multiple=True)
    assert pub.flush(WAIT)


def test_a_returned_cast_gets_its_queue_declared_again_and_is_resent(
        make, broker):
    pub = make()
    publish(pub, b'a', declare=(QUEUE,))
    message_id = broker.channel.last_properties['message_id']
    returned = types.SimpleNamespace(body=b'a',
                                     properties={'message_id': message_id})
    forgotten = broker.forgotten
    broker.deliver('basic_return', Exception('NO_ROUTE'), '', 'q', returned)
    broker.ack(1)
    pub.flush(0)
    broker.wait_for(lambda: broker.channel.writes == [b'a', b'a'])
    assert broker.forgotten > forgotten and broker.declared.count('q') >= 2
    broker.ack(2)
    assert pub.flush(WAIT)


def test_a_cast_the_client_cannot_write_is_raised_not_kept(make, broker):
    pub = make()
    with pytest.raises(TransportError):
        publish(pub, b'unwritable')
    publish(pub, b'a')
    broker.ack_all()
    assert pub.flush(WAIT)
    assert broker.channel.writes == [b'a']


def test_close_flushes_first(make, broker):
    pub = make()
    publish(pub, b'a')
    publish(pub, b'b')
    conn = broker.channel.conn
    thread, outcome = in_thread(pub.close, timeout=WAIT)
    broker.ack(1)
    assert thread.is_alive()  # b is not confirmed yet
    broker.ack(2)
    thread.join(WAIT)
    assert outcome == [('returned', None)]
    broker.wait_for(lambda: conn.released)
    with pytest.raises(TransportError):
        publish(pub, b'c')


def casts(*bodies):
    return [(body, '', 'q', (), {}) for body in bodies]


def test_many_casts_are_tracked_and_confirmed_like_single_ones(make,
                                                               broker):
    pub = make()
    pub.publish_many(casts(b'a', b'b', b'c'), deadline=soon())
    assert broker.channel.writes == [b'a', b'b', b'c']
    broker.ack(1)
    broker.nack(2)
    broker.ack(3)
    broker.wait_for(lambda: broker.channel.writes[3:] == [b'b'])
    assert not pub.flush(0)
    broker.ack(4)
    assert pub.flush(WAIT)


def test_many_casts_cut_by_a_failed_write_all_go_out_again(make, broker):
    pub = make()
    broker.set(fail_writes=1)
    pub.publish_many(casts(b'a', b'b'), deadline=soon())  # written then
    first, second = broker.channels
    assert first.writes == [] and second.writes == [b'a', b'b']
    broker.ack_all()
    assert pub.flush(WAIT)


def test_a_cast_that_cannot_be_written_among_many_is_raised_alone(
        make, broker):
    pub = make()
    with pytest.raises(TransportError):
        pub.publish_many(casts(b'a', b'unwritable', b'c'), deadline=soon())
    # 'a' was written and stays tracked; 'c' goes out with the next.
    broker.wait_for(lambda: broker.channel.writes[-1:] == [b'c'])
    assert [w for ch in broker.channels for w in ch.writes].count(
        b'unwritable') == 0
    broker.ack_all()
    assert pub.flush(WAIT)
    assert b'a' in broker.channel.writes


def test_more_casts_than_the_window_go_out_window_by_window(make, broker):
    pub = make(window=2)
    thread, outcome = in_thread(pub.publish_many,
                                casts(b'a', b'b', b'c'), deadline=soon())
    broker.wait_for(lambda: broker.channels and
                    broker.channel.writes == [b'a', b'b'])
    assert thread.is_alive()  # c waits for room
    broker.ack(2, multiple=True)
    thread.join(WAIT)
    [(how, receipt)] = outcome
    assert how == 'returned' and not receipt.wait(0)
    assert broker.channel.writes == [b'a', b'b', b'c']
    broker.ack(3)
    assert receipt.wait(WAIT)


def test_a_receipt_waits_for_its_own_casts_only(make, broker):
    """An outbox records events as sent once their receipt says the broker
    took them; another cast of the same publisher that the broker keeps
    refusing (presence announcements into a full queue) must not hold
    them back, as waiting for ``flush`` would."""
    pub = make()
    pub.nack_backoff = 0.05
    publish(pub, b'other')
    receipt = pub.publish_many(casts(b'a', b'b'), deadline=soon())
    assert not receipt.wait(0)
    broker.nack(1)  # 'other' refused: it goes out again, unconfirmed
    broker.ack(3, multiple=True)  # 'a' and 'b' taken
    assert receipt.wait(WAIT)
    assert not pub.flush(0)


def test_a_receipt_holds_until_a_refused_cast_is_resent_and_taken(make,
                                                                  broker):
    pub = make()
    pub.nack_backoff = 0.05
    receipt = pub.publish_many(casts(b'a', b'b'), deadline=soon())
    broker.ack(1)
    broker.nack(2)
    assert not receipt.wait(0.1)
    broker.wait_for(lambda: broker.channel.writes[2:] == [b'b'])
    assert not receipt.wait(0)
    broker.ack(3)
    assert receipt.wait(WAIT)


def test_a_receipt_survives_a_lost_connection(make, broker):
    pub = make()
    receipt = pub.publish_many(casts(b'a', b'b'), deadline=soon())
    broker.ack(1)
    broker.lose()
    broker.wait_for(lambda: len(broker.channels) == 2 and
                    broker.channel.writes == [b'b'])
    assert not receipt.wait(0)
    broker.ack(1, channel=broker.channel)
    assert receipt.wait(WAIT)
