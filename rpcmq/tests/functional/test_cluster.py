"""rpcmq and kombu against a 3-node RabbitMQ cluster of the tests' own
(cluster.py): RPC through a URL naming every node, a quorum queue
replicated on all three, and a node killed under a client."""

import time
import uuid

import kombu
import pytest

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.tests.functional.test_dead_letters import poison_story
from rpcmq.tests.scenarios.rpc import Env, wait_for


def kombu_urls(cluster, indexes=None):
    indexes = range(len(cluster.ports)) if indexes is None else indexes
    return ['amqp://guest:guest@127.0.0.1:%d//' % cluster.ports[i]
            for i in indexes]


def cluster_connection(cluster):
    """A kombu connection that may land on any node (round-robin
    failover over all three, one try each)."""
    conn = kombu.Connection(kombu_urls(cluster),
                            failover_strategy='round-robin',
                            connect_timeout=5,
                            transport_options={'confirm_publish': True})
    conn.ensure_connection(max_retries=len(cluster.ports) - 1,
                           interval_start=0, interval_step=0)
    return conn


def node_of(cluster, conn):
    """Index of the node ``conn`` is connected to."""
    return cluster.node_of_port(conn.connection.sock.getpeername()[1])


def quorum_queue(name):
    return kombu.Queue(name, durable=True,
                       queue_arguments={'x-queue-type': 'quorum'})


def test_the_cluster_runs_three_nodes(rabbit_cluster):
    assert rabbit_cluster.running_nodes() == set(rabbit_cluster.nodes)
    assert len(set(rabbit_cluster.ports)) == 3
    assert rabbit_cluster.url() == 'rabbit://%s/' % ','.join(
        'guest:guest@127.0.0.1:%d' % p for p in rabbit_cluster.ports)


def test_call_and_cast_through_the_cluster(rabbit_cluster):
    env = Env(rabbit_cluster.url())
    try:
        diag = DiagEndpoint(unsafe=True)
        env.serve([diag])
        client = env.client()
        assert client.call({}, 'echo', x={'via': 'cluster'}) == \
            {'via': 'cluster'}
        for _ in range(5):
            client.cast({}, 'bump')
        assert wait_for(lambda: diag.count({}) == 5)
        # The server's queue is the cluster's, not one node's.
        for i in range(3):
            assert rabbit_cluster.queue_info('%s.s1' % env.topic, via=i)
    finally:
        env.close()


def test_a_quorum_queue_lives_on_every_node(rabbit_cluster):
    name = 'rpcmq_qq_%s' % uuid.uuid4().hex[:8]
    with kombu.Connection(kombu_urls(rabbit_cluster, [0])[0]) as conn:
        quorum_queue(name)(conn.default_channel).declare()
    try:
        nodes = set(rabbit_cluster.nodes)
        for i in range(3):
            info = rabbit_cluster.queue_info(name, via=i)
            assert info['type'] == 'quorum'
            assert set(info['members']) == nodes
            assert set(info['online']) == nodes
            # And each node's AMQP listener knows it.
            with kombu.Connection(kombu_urls(rabbit_cluster, [i])[0]) as c:
                c.default_channel.queue_declare(name, passive=True)
        assert rabbit_cluster.queue_leader(name) in (0, 1, 2)
    finally:
        with kombu.Connection(kombu_urls(rabbit_cluster, [0])[0]) as conn:
            conn.default_channel.queue_delete(name)


def test_a_killed_node_is_failed_over_and_rejoins(rabbit_cluster):
    cluster = rabbit_cluster
    name = 'rpcmq_qq_%s' % uuid.uuid4().hex[:8]
    conn = cluster_connection(cluster)
    victim = node_of(cluster, conn)
    killed = False
    try:
        with conn.Producer() as producer:
            producer.publish({'kept': True}, routing_key=name,
                             declare=[quorum_queue(name)],
                             delivery_mode=2)
        cluster.kill(victim)
        killed = True
        assert cluster.running_nodes() == \
            set(cluster.nodes) - {cluster.nodes[victim]}
        # The old connection is gone, not just quiet.
        with pytest.raises(conn.connection_errors) as exc:
            conn.drain_events(timeout=5)
        assert not isinstance(exc.value, TimeoutError)
        conn.release()

        # A new connection through the cluster URL reaches another node,
        # and the quorum queue still has the message (with a new leader if
        # the victim led it).
        conn = cluster_connection(cluster)
        assert node_of(cluster, conn) != victim
        deadline = time.monotonic() + 30
        while True:
            try:
                msg = conn.SimpleQueue(quorum_queue(name)).get(timeout=1)
                break
            except Exception:
                # No leader yet: the election after the kill is under way.
                if time.monotonic() > deadline:
                    raise
                conn.release()
                conn = cluster_connection(cluster)
        assert msg.payload == {'kept': True}
        msg.ack()
        assert wait_for(lambda: cluster.queue_leader(name) not in (
            None, victim), timeout=30)

        cluster.restart(victim)
        killed = False
        assert cluster.running_nodes() == set(cluster.nodes)
        with kombu.Connection(kombu_urls(cluster, [victim])[0]) as direct:
            direct.ensure_connection(max_retries=0)
            assert node_of(cluster, direct) == victim
            direct.default_channel.queue_declare(name, passive=True)
        assert wait_for(lambda: set(cluster.queue_info(name, victim)[
            'online']) == set(cluster.nodes), timeout=30)
    finally:
        conn.release()
        if killed:
            cluster.restart(victim)
        with kombu.Connection(kombu_urls(cluster, [0])[0]) as c:
            c.default_channel.queue_delete(name)


def test_a_poison_cast_is_parked_on_the_cluster_and_replayed(
        rabbit_cluster, tmp_path, capsys):
    """max_deliveries = 3 on quorum queues replicated on three nodes: the
    cast that kills its server runs three times, then waits in the
    dead-letter queue; the casts behind it run once each; replay brings it
    back (test_dead_letters.poison_story tells the whole story)."""
    story = poison_story(rabbit_cluster.url(), tmp_path, capsys, 'quorum')
    assert story.starts >= 3
