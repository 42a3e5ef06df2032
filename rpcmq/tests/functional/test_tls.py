"""RabbitMQ over TLS: the [rabbit] ssl options against a real TLS listener
(a node of the installed RabbitMQ started for these tests, see
tlsbroker.py), with client certificates required by the broker."""

import logging
import os
import time

import pytest

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.server import InProcessServer, make_conf
from rpcmq.tests.functional.conftest import require
from rpcmq.tests.functional.tlsbroker import TLSBroker


@pytest.fixture(scope='module')
def tls_broker(tmp_path_factory):
    require('rabbit')  # the same RabbitMQ installation runs this node
    broker = TLSBroker(tmp_path_factory.mktemp('tls'))
    why = broker.available()
    if why:
        if os.environ.get('CI') == 'true':
            pytest.fail('CI needs a TLS broker: %s' % why, pytrace=False)
        pytest.skip(why)
    broker.start()
    yield broker
    broker.stop()


def tls_conf(broker, ca='ca.pem', client_cert=True, **overrides):
    certs = broker.certs
    opts = {'rabbit.ssl': True, 'rabbit.ssl_ca_file': certs[ca],
            'rabbit.rabbit_retry_interval': 0.2,
            'rabbit.rabbit_retry_backoff': 0.2}
    if client_cert:
        opts.update({'rabbit.ssl_cert_file': certs['client.pem'],
                     'rabbit.ssl_key_file': certs['client.key']})
    opts.update(overrides)
    return make_conf(**opts)


def test_call_and_cast_over_tls(tls_broker):
    diag = DiagEndpoint(unsafe=True)
    with InProcessServer([diag], url=tls_broker.url(),
                         conf=tls_conf(tls_broker)) as env:
        assert env.client.call({}, 'echo', x={'over': 'tls'}) == \
            {'over': 'tls'}
        for _ in range(5):
            env.client.cast({}, 'bump')
        assert env.transport.flush(10)
        deadline = time.monotonic() + 10
        while diag.count({}) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert diag.count({}) == 5


def test_amqps_urls_are_tls_without_the_ssl_option(tls_broker):
    conf = tls_conf(tls_broker, **{'rabbit.ssl': False})
    with InProcessServer([DiagEndpoint(unsafe=True)],
                         url=tls_broker.url(scheme='amqps'),
                         conf=conf) as env:
        assert env.client.call({}, 'echo', x='amqps') == 'amqps'
    # The same options on rabbit:// speak plain AMQP to the TLS port.
    transport = rpcmq.get_transport(conf, url=tls_broker.url())
    try:
        client = rpcmq.RPCClient(transport, rpcmq.Target(topic='t'),
                                 timeout=2)
        with pytest.raises((rpcmq.MessagingTimeout, rpcmq.TransportError)):
            client.call({}, 'echo', x=1)
    finally:
        transport.cleanup()


def test_a_broker_signed_by_another_ca_is_refused(tls_broker, caplog):
    transport = rpcmq.get_transport(tls_conf(tls_broker, ca='other-ca.pem'),
                                    url=tls_broker.url())
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic='tls_refused'),
                             timeout=2)
    try:
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            with pytest.raises(rpcmq.BrokerUnreachable):
                client.cast({}, 'bump')
            # Never connected: a transport error saying why, not a timeout.
            with pytest.raises(rpcmq.BrokerUnreachable) as info:
                client.call({}, 'ping')
            assert 'CERTIFICATE_VERIFY_FAILED' in str(info.value)
            assert time.monotonic() - started < 10
        assert 'CERTIFICATE_VERIFY_FAILED' in caplog.text
    finally:
        transport.cleanup()


def test_the_broker_must_name_the_host_connected_to(tls_broker, caplog):
    # ::1 reaches the same listener but is not in its certificate.
    url = tls_broker.url('[::1]')
    transport = rpcmq.get_transport(tls_conf(tls_broker), url=url)
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic='tls_name'),
                             timeout=2)
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(rpcmq.TransportError):
                client.cast({}, 'bump')
        assert "doesn't match" in caplog.text or \
            'mismatch' in caplog.text, caplog.text
    finally:
        transport.cleanup()
    # Turned off on purpose, the same broker is accepted.
    conf = tls_conf(tls_broker, **{'rabbit.ssl_verify_hostname': False})
    with InProcessServer([DiagEndpoint(unsafe=True)], url=url,
                         conf=conf) as env:
        assert env.client.call({}, 'echo', x=1) == 1


def test_failover_checks_each_host_by_its_own_name(tls_broker):
    # The first host is not in the certificate, the second is: the
    # connection fails over to 127.0.0.1 and verifies it as such.
    url = 'rabbit://guest:guest@[::1]:%d,guest:guest@127.0.0.1:%d/' % (
        tls_broker.port, tls_broker.port)
    with InProcessServer([DiagEndpoint(unsafe=True)], url=url,
                         conf=tls_conf(tls_broker)) as env:
        assert env.client.call({}, 'echo', x=2) == 2


def test_the_broker_requires_a_client_certificate(tls_broker, caplog):
    transport = rpcmq.get_transport(tls_conf(tls_broker, client_cert=False),
                                    url=tls_broker.url())
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic='tls_nocert'),
                             timeout=2)
    try:
        with pytest.raises(rpcmq.TransportError):
            client.cast({}, 'bump')
    finally:
        transport.cleanup()


def test_missing_certificate_files_are_a_config_error(tls_broker, tmp_path):
    conf = tls_conf(tls_broker, **{
        'rabbit.ssl_ca_file': str(tmp_path / 'nope.pem')})
    with pytest.raises(rpcmq.ConfigError) as err:
        rpcmq.get_transport(conf, url=tls_broker.url())
    assert 'ssl_ca_file' in str(err.value) and 'nope.pem' in str(err.value)
