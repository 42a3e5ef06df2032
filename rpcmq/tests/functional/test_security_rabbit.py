"""Only key holders call: daemons with ``require_signed`` against an
attacker who has the broker login and plain pika, on the real RabbitMQ."""

import json
import time
import uuid

import pytest

from rpcmq.security import signing
from rpcmq.security.signing import Key, Keyring
from rpcmq.testing.imageserver import ImageServer
from rpcmq.tests.functional.conftest import RABBIT_URL, REDIS_URL, require
from rpcmq.tests.functional.fixtures import OSS, Cluster, pipeline_oss

pika = pytest.importorskip('pika')

OPS = 'ops:Ops-secret-for-the-daemons-0123'
BRIDGE_SECRET = 'Bridge-secret-only-conductor-99'
STOLEN_URL = '/img/loot.png?kb=20'


@pytest.fixture(scope='module')
def oss():
    with pipeline_oss() as srv:
        yield srv


@pytest.fixture(scope='module')
def images():
    with ImageServer() as srv:
        yield srv


@pytest.fixture(scope='module')
def cluster(tmp_path_factory, oss):
    require('rabbit')
    cluster = Cluster(tmp_path_factory.mktemp('signed'), RABBIT_URL,
                      oss.endpoint)
    bridge = 'bridge:%s@%s' % (BRIDGE_SECRET, cluster.conductor_topic)
    # Two image servers share one topic: the nonces live in Redis, so a
    # replay is caught whichever server gets it.
    security = {'signing_keys': '%s, %s' % (OPS, bridge),
                'signing_key_id': 'ops', 'require_signed': 'true',
                'nonce_store': REDIS_URL}
    cluster.server_opts = {'security': security}
    cluster.conductor_opts = {'security': security}
    cluster.transport.conf.set_override('signing_keys', [OPS, bridge],
                                        'security')
    cluster.transport.conf.set_override('require_signed', True, 'security')
    from rpcmq.transport import Transport
    cluster.transport = Transport(cluster.transport.conf,
                                  cluster.transport.driver,
                                  cluster.transport.url)
    from rpcmq.conductor.api import ConductorAPI
    cluster.api = ConductorAPI(cluster.transport)
    cluster.bridge_key = Key.parse(bridge)
    try:
        cluster.start_servers()
        cluster.start_conductor('sqlite:///%s' % (cluster.workdir /
                                                  'signed.sqlite'))
        cluster.listen()
        yield cluster
    finally:
        cluster.stop_conductor()
        cluster.close()


class Attacker:
    """A plain pika client with the broker login and no (or a wrong) key."""

    def __init__(self, cluster):
        self.exchange = cluster.control_exchange
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            '127.0.0.1', 5672, credentials=pika.PlainCredentials(
                'guest', 'guest')))
        self.ch = self.conn.channel()
        self.reply_q = self.ch.queue_declare('', exclusive=True).method.queue

    def call(self, routing_key, body, headers=None, cid=None):
        cid = cid or uuid.uuid4().hex
        self.ch.basic_publish(self.exchange, routing_key, body,
                              pika.BasicProperties(
                                  content_type='application/json',
                                  reply_to=self.reply_q, correlation_id=cid,
                                  headers=headers))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            method, props, reply = self.ch.basic_get(self.reply_q,
                                                     auto_ack=True)
            if method is not None and props.correlation_id == cid:
                return json.loads(reply)
            self.conn.process_data_events(time_limit=0.05)
        raise AssertionError('no reply to the attacker')

    def close(self):
        self.conn.close()


@pytest.fixture
def attacker(cluster):
    a = Attacker(cluster)
    yield a
    a.close()


def request(method, namespace=None, **args):
    msg = {'method': method, 'args': args, 'context': {}}
    if namespace:
        msg['namespace'] = namespace
    return json.dumps(msg).encode()


def sign_as(entry, exchange, routing_key, body, cid):
    return Keyring([Key.parse(entry)]).sign('request', exchange, routing_key,
                                            body, cid)


def refusal(reply):
    assert reply['failure']['type'] == 'Unauthenticated', reply
    assert reply['failure']['traceback'] == ''
    return reply['failure']['message']


def test_forged_requests_are_refused_and_nothing_is_written(
        cluster, attacker, images, oss):
    topic, ex = cluster.image_topic, cluster.control_exchange
    body = request('transfer', namespace='image', url=images.url(STOLEN_URL),
                   key='owned.png')
    cid = 'forged-1'
    ops_headers = sign_as(OPS, ex, topic, body, cid)
    evil = 'ops:%s' % ('x' * 32)  # the right key id, a guessed secret
    cases = {
        'not signed': (topic, body, None),
        'unknown key': (topic, body, sign_as('intruder:' + 'y' * 32, ex,
                                             topic, body, cid)),
        'does not match': (topic, body, sign_as(evil, ex, topic, body, cid)),
        'tampered body': (topic, body.replace(b'owned', b'pwned'),
                          ops_headers),
        'tampered routing key': (topic, body, sign_as(
            OPS, ex, topic + '.img-a', body, cid)),
    }
    for name, (routing_key, sent, headers) in cases.items():
        message = refusal(attacker.call(routing_key, sent, headers, cid))
        expected = 'not signed' if name == 'not signed' else \
            'unknown key' if name == 'unknown key' else 'does not match'
        assert expected in message, (name, message)
        assert 'Bridge-secret' not in message and 'Ops-secret' not in message
    assert oss.object_info(OSS['bucket'], 'owned.png') is None
    assert oss.object_info(OSS['bucket'], 'pwned.png') is None


def test_stale_and_replayed_requests_are_refused(cluster, attacker,
                                                 monkeypatch):
    require('redis')
    topic, ex = cluster.image_topic, cluster.control_exchange
    # A store of a spool that does not exist: harmless, and it says
    # whether it ran (SpoolNotFound) or was refused.
    body = request('store', namespace='image', spool_id='0' * 32)
    headers = sign_as(OPS, ex, topic, body, 'captured-1')
    ran = attacker.call(topic, body, headers, 'captured-1')
    assert ran['failure']['type'] == 'SpoolNotFound', ran
    for _ in range(4):  # whichever of the two servers takes it
        assert 'replay' in refusal(attacker.call(topic, body, headers,
                                                 'captured-1'))
    real_time = signing.time.time
    monkeypatch.setattr(signing.time, 'time', lambda: real_time() - 3600)
    old = sign_as(OPS, ex, topic, body, 'old-1')
    monkeypatch.setattr(signing.time, 'time', real_time)
    assert 'max_clock_skew' in refusal(attacker.call(topic, body, old,
                                                     'old-1'))


def test_a_key_limited_to_the_conductor_cannot_transfer(cluster, attacker,
                                                        images, oss):
    topic, ex = cluster.image_topic, cluster.control_exchange
    bridge = 'bridge:%s' % BRIDGE_SECRET
    body = request('transfer', namespace='image', url=images.url(STOLEN_URL),
                   key='via.png')
    message = refusal(attacker.call(topic, body, sign_as(
        bridge, ex, topic, body, 'b-1'), 'b-1'))
    assert 'may not call topic' in message
    assert oss.object_info(OSS['bucket'], 'via.png') is None
    # The same key may talk to the conductor: its signature is accepted.
    listing = request('list', namespace='batch')
    reply = attacker.call(cluster.conductor_topic, listing, sign_as(
        bridge, ex, cluster.conductor_topic, listing, 'b-2'), 'b-2')
    assert 'failure' not in reply or \
        reply['failure']['type'] != 'Unauthenticated', reply


def test_unsigned_batch_calls_are_refused(cluster, attacker):
    for method in ('list', 'cancel'):
        args = {'batch_id': 'b'} if method == 'cancel' else {}
        message = refusal(attacker.call(cluster.conductor_topic, request(
            method, namespace='batch', **args)))
        assert 'not signed' in message


def test_a_signed_batch_runs_through_every_daemon(cluster, images, oss):
    urls = [images.url('/img/s%d.png?kb=8' % i) for i in range(3)]
    batch_id = cluster.submit([{'url': u} for u in urls])
    end = cluster.wait_end(batch_id, timeout=60)
    assert end['totals']['done'] == 3, (end, cluster.logs())


def test_signed_casts_run_and_unsigned_ones_are_dropped(cluster, attacker,
                                                        images, oss):
    import rpcmq
    topic = cluster.image_topic
    url = images.url('/img/cast.png?kb=8')
    # The attacker's cast first: refused without running, and acked.
    body = request('transfer', namespace='image', url=url, key='forged.png')
    attacker.ch.basic_publish(cluster.control_exchange, topic, body,
                              pika.BasicProperties(
                                  content_type='application/json'))
    client = rpcmq.RPCClient(cluster.transport, rpcmq.Target(
        topic=topic, namespace='image', exchange=cluster.control_exchange),
        timeout=30)
    client.cast({}, 'transfer', url=url, key='signed-cast.png')
    deadline = time.monotonic() + 30
    while oss.object_info(OSS['bucket'], 'signed-cast.png') is None:
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)
    while 'rejected cast' not in cluster.logs():
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)
    assert 'not signed' in cluster.logs()
    assert oss.object_info(OSS['bucket'], 'forged.png') is None
