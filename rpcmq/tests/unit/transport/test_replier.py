"""The reply connection against a fake broker connection: replies are
written on a live channel, a failed write goes once more on the next
connection, a dead broker fails the reply at its deadline, and the owner
thread keeps reading (heartbeats) and reconnects after a pause. Tests
wait on the fake's condition, never on sleeps."""

import queue
import socket
import threading
import time

import pytest

from rpcmq.exceptions import BrokerUnreachable, TransportError
from rpcmq.transport.replier import Replier

pytestmark = pytest.mark.timeout(60)

WAIT = 5


class Broker:

    def __init__(self):
        self.cond = threading.Condition()
        self.connections = []
        self.writes = []          # (connection number, routing key, body)
        self.fail_writes = 0
        self.reachable = True
        self.heartbeats = 0

    def wait_for(self, predicate, timeout=WAIT):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), self.writes


class Channel:

    def __init__(self, conn):
        self.conn = conn

    def send_method(self, sig, fmt, args, msg):
        broker = self.conn.broker
        with broker.cond:
            if self.conn.dead:
                raise ConnectionResetError('connection reset')
            if broker.fail_writes:
                broker.fail_writes -= 1
                self.conn.dead = True
                raise BrokenPipeError('broken pipe')
            broker.writes.append((self.conn.number, args[2], msg.body))
            broker.cond.notify_all()


class Connection:

    def __init__(self, broker):
        self.broker = broker
        self.inbox = queue.Queue()
        self.dead = False
        with broker.cond:
            broker.connections.append(self)
            self.number = len(broker.connections)
            broker.cond.notify_all()

    def channel(self):
        return Channel(self)

    def drain_events(self, timeout=None):
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise socket.timeout('timed out') from None
        raise item

    def heartbeat_check(self):
        with self.broker.cond:
            self.broker.heartbeats += 1
            self.broker.cond.notify_all()

    def collect(self):
        self.dead = True

    release = collect


class Driver:
    url = 'fake://broker/'
    retry_policy = {'interval_start': 0.05, 'interval_step': 0.05,
                    'interval_max': 0.1, 'max_retries': None}

    def __init__(self, broker):
        self.broker = broker

    def connection(self):
        return None

    def ensure_connection(self, conn, errback):
        while not self.broker.reachable:
            errback(ConnectionRefusedError('connection refused'), 0.01)
            with self.broker.cond:
                self.broker.cond.wait(0.01)
        return Connection(self.broker)

    def retry_or_give_up(self, exc, interval, deadline):
        pass

    def recoverable_errors(self):
        return (OSError,)


@pytest.fixture
def broker():
    return Broker()


@pytest.fixture
def replier(broker):
    replier = Replier(Driver(broker))
    yield replier
    broker.reachable = True
    replier.close()


def soon():
    return time.monotonic() + WAIT


def test_replies_are_written_on_one_connection(replier, broker):
    replier.send(b'a', 'reply_p', soon(), correlation_id='1')
    replier.send(b'b', 'reply_q', soon(), correlation_id='2')
    assert broker.writes == [(1, 'reply_p', b'a'), (1, 'reply_q', b'b')]


def test_the_owner_keeps_reading_so_heartbeats_go_on(replier, broker):
    replier.send(b'a', 'q', soon())
    broker.wait_for(lambda: broker.heartbeats >= 2)


def test_a_failed_write_goes_once_more_on_the_next_connection(replier,
                                                              broker):
    replier.send(b'a', 'q', soon())
    broker.fail_writes = 1
    replier.send(b'b', 'q', soon())
    assert broker.writes == [(1, 'q', b'a'), (2, 'q', b'b')]


def test_a_broker_closing_the_connection_is_noticed_and_replaced(
        replier, broker):
    replier.send(b'a', 'q', soon())
    broker.connections[0].inbox.put(ConnectionResetError('541 closed'))
    broker.wait_for(lambda: len(broker.connections) == 2)
    replier.send(b'b', 'q', soon())
    assert broker.writes[-1] == (2, 'q', b'b')


def test_an_unreachable_broker_fails_the_reply_at_its_deadline(replier,
                                                               broker):
    broker.reachable = False
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match='connection refused'):
        replier.send(b'a', 'q', time.monotonic() + 0.3)
    assert time.monotonic() - started < WAIT
    assert broker.writes == []


def test_a_closed_replier_refuses(replier, broker):
    replier.close()
    with pytest.raises(TransportError, match='closed'):
        replier.send(b'a', 'q', soon())


class Probe:
    """Stands for ``probe.Probe``: every direct reply-to address is
    unproven until ``forget`` is counted (its own tests: test_probe)."""

    def __init__(self):
        self.sent, self.forgotten = [], 0

    def unproven(self, address):
        return 'head' if address.startswith('amq.rabbitmq.') else None

    def send(self, head, body, address, deadline, **properties):
        self.sent.append((address, body))

    def forget(self):
        self.forgotten += 1

    def close(self):
        pass


def test_an_unproven_address_goes_through_the_probe(replier, broker):
    replier._probe = probe = Probe()
    replier.send(b'a', 'amq.rabbitmq.reply-to.x.y', soon())
    replier.send(b'b', 'q', soon())
    assert probe.sent == [('amq.rabbitmq.reply-to.x.y', b'a')]
    assert broker.writes == [(1, 'q', b'b')]
    # A lost reply connection may have lost a caller's node with it.
    broker.connections[0].inbox.put(ConnectionResetError('541 closed'))
    broker.wait_for(lambda: len(broker.connections) == 2)
    assert probe.forgotten == 1
