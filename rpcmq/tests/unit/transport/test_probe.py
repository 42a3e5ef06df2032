"""Replies to direct reply-to addresses not yet proven: which addresses
need proving, and every way a probed reply can end (the broker takes it,
closes the connection on it, the connection drops, a nack), against a
fake connection. The functional story is test_delivery's
``test_a_forged_reply_address_costs_only_its_own_reply``."""

import base64
import os
import socket
import time

import amqp.exceptions
import pytest
from amqp import spec

from rpcmq.exceptions import BrokerRefused, BrokerUnreachable, TransportError
from rpcmq.transport.probe import MAX_PROVEN, PREFIX, Probe, pid_head

NODE = b'v\x00\rreply@9248884'  # ATOM_UTF8_EXT, as RabbitMQ 3.10 writes


def address(term, key='kGUNPJ748+dYS3UWWW9Yqw=='):
    return PREFIX + base64.b64encode(term).decode() + '.' + key


def pid(node=NODE, integers=None):
    return b'\x83X' + node + (integers or os.urandom(12))


# -- which addresses need proving -----------------------------------------

def test_a_queue_name_never_needs_proving():
    for name in ('reply_q', 'amq.gen-xyz', 'amq.rabbitmq.reply-to', ''):
        assert pid_head(name) is None


def test_addresses_of_one_node_share_their_head_whatever_the_integers():
    heads = {pid_head(address(pid())) for _ in range(5)}
    assert heads == {b'\x83X' + NODE}
    old = b'\x83g' + NODE + bytes(9)  # PID_EXT
    assert pid_head(address(old)) == b'\x83g' + NODE
    small = b'\x83Xw\x0dreply@9248884' + bytes(12)
    assert pid_head(address(small)) == b'\x83Xw\x0dreply@9248884'
    assert pid_head(address(pid(), key='!!')) == b'\x83X' + NODE


@pytest.mark.parametrize('forged', [
    PREFIX + 'AAAA.x',                          # not a term
    PREFIX + '!!!.x',                           # not base64
    PREFIX + '\u00e9.x',
    PREFIX + 'x',                               # no key
    address(pid()) + '.x',                      # a dot too many
    address(pid(), key=''),
    address(pid() + b'\x00'),                   # a byte too many
    address(pid()[:-1]),
    address(b'\x83Xd\x00\x0dreply@9248884' + bytes(12)),  # ATOM_EXT
    address(b'\x84X' + NODE + bytes(12)),       # another version
    address(b'\x83'),
])
def test_an_address_of_another_shape_is_its_own_head(forged):
    assert pid_head(forged) == forged


# -- sending through the probe --------------------------------------------

class Channel:

    def __init__(self, conn):
        self.conn = conn
        self.confirming = False

    def confirm_select(self):
        self.confirming = True

    def send_method(self, sig, fmt, args, msg):
        self.conn.driver.sent.append((self.conn.number, args[2], msg.body))

    def wait(self, methods, callback=None, timeout=None):
        assert self.confirming and timeout > 0
        verdict = self.conn.driver.verdicts.pop(0)
        if isinstance(verdict, BaseException):
            self.conn.dead = True
            raise verdict
        callback(verdict)


class Connection:

    def __init__(self, driver):
        self.driver = driver
        self.dead = False
        self.number = len(driver.connections) + 1
        driver.connections.append(self)

    def clone(self, heartbeat=None):
        assert heartbeat == 0
        return self

    def channel(self):
        return Channel(self)

    def collect(self):
        self.dead = True


class Driver:
    url = 'fake://broker/'

    def __init__(self):
        self.sent = []
        self.verdicts = []
        self.connections = []
        self.reachable = True

    def connection(self):
        return Connection(self)

    def ensure_connection(self, conn, errback):
        if not self.reachable:
            errback(ConnectionRefusedError('connection refused'), 0.1)
        return conn

    def retry_or_give_up(self, exc, interval, deadline):
        raise BrokerUnreachable(url=self.url, reason=str(exc))

    def recoverable_errors(self):
        return (OSError, amqp.exceptions.RecoverableConnectionError)


ACK, NACK = spec.Basic.Ack, spec.Basic.Nack
INTERNAL = amqp.exceptions.InternalError('', (0, 0), 541)


@pytest.fixture
def driver():
    return Driver()


@pytest.fixture
def probe(driver):
    probe = Probe(driver)
    yield probe
    probe.close()


def send(probe, to, body=b'{}'):
    head = probe.unproven(to)
    assert head is not None
    probe.send(head, body, to, time.monotonic() + 5, correlation_id='c')


def test_a_reply_the_broker_takes_proves_its_node(probe, driver):
    first, second = address(pid()), address(pid())
    driver.verdicts = [ACK]
    send(probe, first)
    assert driver.sent == [(1, first, b'{}')]
    assert probe.unproven(second) is None  # same node: reply connection


def test_a_reply_the_broker_closes_the_connection_on_is_dropped(probe,
                                                                driver):
    forged, good = PREFIX + 'AAAA.x', address(pid())
    driver.verdicts = [INTERNAL, ACK]
    with pytest.raises(BrokerRefused) as info:
        send(probe, forged)
    assert 'AAAA' in str(info.value) and 'dropped' in str(info.value)
    assert probe.unproven(forged) == forged  # never proven
    # Written once, never again; the next reply goes on a new connection.
    send(probe, good)
    assert driver.sent == [(1, forged, b'{}'), (2, good, b'{}')]
    assert driver.connections[0].dead


def test_an_odd_address_the_broker_takes_proves_itself_only(probe, driver):
    odd, other = PREFIX + 'x', PREFIX + 'y'
    driver.verdicts = [ACK]
    send(probe, odd)
    assert probe.unproven(odd) is None
    assert probe.unproven(other) == other


def test_a_pid_on_a_node_not_running_is_refused_alone(probe, driver):
    node = address(pid(node=b'w\x0breply@12345'))
    driver.verdicts = [INTERNAL]
    with pytest.raises(BrokerRefused):
        send(probe, node)
    assert probe.unproven(node) is not None


def test_a_dropped_connection_sends_the_reply_once_more(probe, driver):
    to = address(pid())
    driver.verdicts = [ConnectionResetError('reset'), ACK]
    send(probe, to)
    assert [n for n, _, _ in driver.sent] == [1, 2]
    assert probe.unproven(to) is None


def test_a_connection_that_drops_twice_fails_the_reply(probe, driver):
    driver.verdicts = [socket.timeout('timed out'),
                       ConnectionResetError('reset')]
    with pytest.raises(BrokerUnreachable):
        send(probe, address(pid()))


def test_a_nacked_reply_fails_and_proves_nothing(probe, driver):
    to = address(pid())
    driver.verdicts = [NACK]
    with pytest.raises(TransportError, match='basic.nack'):
        send(probe, to)
    assert probe.unproven(to) is not None


def test_an_unreachable_broker_fails_the_reply(probe, driver):
    driver.reachable = False
    with pytest.raises(BrokerUnreachable):
        send(probe, address(pid()))
    assert driver.sent == []


def test_forgetting_proves_every_node_again(probe, driver):
    to = address(pid())
    driver.verdicts = [ACK]
    send(probe, to)
    probe.forget()
    assert probe.unproven(to) is not None


def test_the_proven_nodes_are_bounded(probe, driver):
    driver.verdicts = [ACK] * (MAX_PROVEN + 1)
    for i in range(MAX_PROVEN + 1):
        node = b'w' + bytes([len(b'n@%d' % i)]) + b'n@%d' % i
        send(probe, address(pid(node=node)))
    assert len(probe._proven) <= MAX_PROVEN


def test_a_closed_probe_refuses_and_opens_no_connection(probe, driver):
    # A worker finishing after the transport closed must not open a
    # connection nobody will close.
    driver.verdicts = [ACK]
    send(probe, address(pid()))
    probe.close()
    with pytest.raises(TransportError, match='closed'):
        send(probe, address(pid(node=b'w\x03n@1')))
    assert len(driver.connections) == 1 and driver.connections[0].dead
