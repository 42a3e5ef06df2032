"""Quorum request queues by default, classic on request, on one node.

An operator upgrading finds classic queues declared by the old release;
rpcmq says which queue and what to do instead of retrying a 406 for ever.
"""

import subprocess
import uuid

import kombu
import pytest

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.cleanup import delete_entities
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.functional.poison import _conf
from rpcmq.tests.scenarios.rpc import wait_for

pytestmark = pytest.mark.timeout(120)


def queue_types():
    out = subprocess.run(['rabbitmqctl', '-q', 'list_queues', 'name', 'type'],
                         capture_output=True, text=True, timeout=60).stdout
    return dict(line.split('\t') for line in out.splitlines()
                if line.count('\t') == 1)


@pytest.fixture
def topic(rabbit_url):
    name = 'qt_%s' % uuid.uuid4().hex[:8]
    yield name
    delete_entities(rabbit_url, [name, name + '.s1', name + '_dead'])


@pytest.mark.parametrize('queue_type', ['quorum', 'classic'])
def test_calls_and_casts_on_either_queue_type(rabbit_url, topic, queue_type,
                                              caplog):
    caplog.set_level('INFO', logger='rpcmq.transport.rabbit')
    transport = rpcmq.get_transport(
        _conf(['rabbit.queue_type=%s' % queue_type]), url=rabbit_url)
    diag = DiagEndpoint(unsafe=True)
    server = rpcmq.get_rpc_server(
        transport, rpcmq.Target(topic=topic, server='s1'), [diag])
    try:
        assert server.start()
        client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                                 timeout=20)
        assert client.call({}, 'echo', x=queue_type) == queue_type
        client.cast({}, 'bump')
        assert wait_for(lambda: diag.count({}) == 1)
        types = queue_types()
        assert types[topic] == queue_type
        assert types[topic + '.s1'] == queue_type
    finally:
        server.stop()
        server.wait(10)
        transport.cleanup()
    assert 'connected to RabbitMQ 3.' in caplog.text
    assert 'request queues are %s' % queue_type in caplog.text


def declare_classic(topic):
    with kombu.Connection('amqp://guest:guest@127.0.0.1:5672//') as conn:
        kombu.Queue(topic, kombu.Exchange('rpcmq', type='topic'),
                    routing_key=topic, durable=True)(
                        conn.default_channel).declare()


def test_a_classic_queue_left_by_an_older_release_is_named_with_the_fix(
        rabbit_url, topic):
    declare_classic(topic)
    transport = rpcmq.get_transport(_conf([]), url=rabbit_url)
    server = rpcmq.get_rpc_server(
        transport, rpcmq.Target(topic=topic, server='s1'),
        [DiagEndpoint(unsafe=True)])
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic), timeout=10)
    try:
        with pytest.raises(rpcmq.BrokerRefused) as refused:
            server.start(ready_timeout=20)
        with pytest.raises(rpcmq.BrokerRefused) as cast_refused:
            client.cast({}, 'bump')
    finally:
        transport.cleanup()
    for error in (refused.value, cast_refused.value):
        text = str(error)
        assert "queue '%s' exists as a classic queue but [rabbit] " \
               "queue_type = quorum" % topic in text
        assert 'Set queue_type = classic' in text
        assert 'rabbitmqctl delete_queue %s' % topic in text


def test_the_daemon_exits_with_one_line_on_a_queue_of_the_other_type(
        rabbit_url, topic, tmp_path):
    declare_classic(topic)
    conf = write_config(tmp_path / 'server.conf', {'DEFAULT': {
        'transport_url': rabbit_url, 'endpoints': 'diag', 'topic': topic,
        'host': 's1'}})
    daemon = Daemon('rpcmq-server', conf, tmp_path / 'server.log').start()
    try:
        code = daemon.proc.wait(60)
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    log = daemon.log()
    assert code != 0, log
    assert 'exists as a classic queue' in log
    assert 'Traceback' not in log
