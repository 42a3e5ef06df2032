"""One error vocabulary: what a caller sees when the broker is down, the
password is wrong, or the broker refuses an entity -- within its timeout."""

import socket
import time
import uuid

import kombu
import pytest

import rpcmq
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.daemons import Daemon, write_config

KOMBU_URL = 'amqp://guest:guest@127.0.0.1:5672//'


def closed_port():
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def client_for(url, timeout=3, **overrides):
    transport = rpcmq.get_transport(make_conf(**overrides), url=url)
    topic = 'err_%s' % uuid.uuid4().hex[:8]
    return transport, rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                                      timeout=timeout)


def timed(fn):
    started = time.monotonic()
    with pytest.raises(rpcmq.TransportError) as info:
        fn()
    return info.value, time.monotonic() - started


@pytest.mark.parametrize('max_retries', [0, 2])
def test_a_broker_that_is_down_is_a_transport_error_within_the_timeout(
        rabbit_url, max_retries):
    url = 'rabbit://guest:guest@127.0.0.1:%d/' % closed_port()
    transport, client = client_for(
        url, timeout=3, **{'rabbit.rabbit_max_retries': max_retries,
                           'rabbit.rabbit_retry_interval': 0.2})
    try:
        for send in (lambda: client.call({}, 'ping'),
                     lambda: client.cast({}, 'ping')):
            error, took = timed(send)
            assert isinstance(error, rpcmq.BrokerUnreachable), repr(error)
            assert 'Connection refused' in str(error)
            assert took < 3 + 1.5
    finally:
        transport.cleanup()


def test_a_wrong_password_says_so_at_once(rabbit_url):
    url = 'rabbit://guest:not-the-password@127.0.0.1:5672/'
    transport, client = client_for(url, timeout=10)
    try:
        for send in (lambda: client.call({}, 'ping'),
                     lambda: client.cast({}, 'ping')):
            error, took = timed(send)
            assert isinstance(error, rpcmq.AuthenticationError), repr(error)
            text = str(error)
            assert "user 'guest'" in text and "vhost '/'" in text
            assert 'not-the-password' not in text
            assert took < 10  # refused, not waited out
    finally:
        transport.cleanup()


def test_an_entity_the_broker_refuses_is_not_retried(rabbit_url):
    # Someone declared the topic's queue with other arguments: RabbitMQ
    # answers 406 PRECONDITION_FAILED, and will every time.
    transport, client = client_for(rabbit_url, timeout=20)
    topic = client.target.topic
    with kombu.Connection(KOMBU_URL) as conn:
        kombu.Queue(topic, durable=False)(conn.default_channel).declare()
    try:
        for send in (lambda: client.cast({}, 'ping'),
                     lambda: client.call({}, 'ping')):
            error, took = timed(send)
            assert isinstance(error, rpcmq.BrokerRefused), repr(error)
            assert 'PRECONDITION_FAILED' in str(error)
            assert topic in str(error)
            assert took < 10  # not retried until the 20 s timeout
    finally:
        transport.cleanup()
        delete_entities(rabbit_url, [topic])


def test_a_daemon_with_a_wrong_password_exits_with_one_line(rabbit_url,
                                                            tmp_path):
    conf = write_config(tmp_path / 'rpcmq.conf', {'DEFAULT': {
        'transport_url': 'rabbit://guest:wrong@127.0.0.1:5672/',
        'endpoints': 'diag', 'topic': 'err_%s' % uuid.uuid4().hex[:8],
        'host': 'denied-1'}})
    daemon = Daemon('rpcmq-server', conf, tmp_path / 'server.log').start()
    try:
        code = daemon.proc.wait(30)
    finally:
        daemon.stop()
    log = daemon.log()
    assert code != 0
    assert 'refused the login' in log and 'Traceback' not in log
    assert 'rpcmq-server started' not in log


def test_a_daemon_whose_broker_is_down_does_not_claim_to_have_started(
        rabbit_url, tmp_path):
    conf = write_config(tmp_path / 'rpcmq.conf', {'DEFAULT': {
        'transport_url': 'rabbit://guest:guest@127.0.0.1:%d/' % closed_port(),
        'endpoints': 'diag', 'topic': 'err_%s' % uuid.uuid4().hex[:8],
        'host': 'lonely-1'}, 'rabbit': {'rabbit_retry_interval': 0.2}})
    daemon = Daemon('rpcmq-server', conf, tmp_path / 'server.log').start()
    try:
        daemon.wait_for_log('not connected to the broker yet', timeout=30)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    log = daemon.log()
    assert 'rpcmq-server started' not in log and 'Traceback' not in log
    assert 'ECONNREFUSED' in log or 'Connection refused' in log


def test_a_write_on_a_connection_the_broker_closed_is_a_lost_connection(
        rabbit_url):
    # py-amqp drops its socket when the broker closes a connection; a
    # reply written on it then raised AttributeError, which the replier
    # does not take for a lost connection: the reply was lost instead of
    # written again on the next connection.
    from rpcmq.transport import raw
    transport = rpcmq.get_transport(make_conf(), url=rabbit_url)
    driver = transport.driver
    conn = driver.connection()
    try:
        conn.connect()
        channel = conn.default_channel
        conn.connection.transport.close()  # as py-amqp does on a close
        with pytest.raises(driver.recoverable_errors()) as raised:
            raw.send(channel, b'{}', '', 'nowhere')
        assert 'closed' in str(raised.value)
    finally:
        conn.release()
        transport.cleanup()
