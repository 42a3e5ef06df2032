"""Failover with quorum queues: a node of the 3-node cluster (cluster.py)
is killed with SIGKILL under load, and rpcmq must keep its promises.

* Casts: every cast whose ``cast()`` returned runs at least once, however
  the node leading its queue dies; ``cast()`` and ``call()`` return or
  raise within their timeout.
* Calls: a server whose node dies reconnects to a live node and serves
  again; calls in flight return or fail (MessagingTimeout, or
  CallInterrupted for one the broker handed out again), in time, and none
  runs twice.
* Batches: a 1,000-item batch (``rpcmq-conductor`` on PostgreSQL, two
  ``rpcmq-server`` image daemons, the OSS fake) completes while the node
  its daemons use is killed and restarted: every object stored once,
  ``batch.end`` once.

Who ran what is counted in this process (``failover.Runs``), what each
client saw in ``failover.Ops``. Each test puts the killed node back
(``restore``), so the next one starts with three nodes.

Notes on RabbitMQ 3.10 (the version these tests run against), which decide
where each test connects its clients:

* A channel opened while a quorum queue elects a new leader (in the first
  few hundred milliseconds after its leader's node died) loses everything
  it publishes to that queue, confirmed or not, until the old leader's
  node is back. rpcmq's reply consumer reconnects within that window, so a
  caller that was connected to the dead leader's node may get no replies
  from that queue afterwards. (The confirming publisher waits
  ``rabbit_retry_interval``, 0.5 s, before it reconnects: longer than the
  elections took here.) So no caller is connected to the node that leads
  the queue it calls when that node is killed.
* A reply sent to a direct reply-to address on a node that is down makes
  the broker close the sender's connection (541 INTERNAL_ERROR). Servers
  reply on a connection of their own, not the one they consume from, so
  only that connection goes (``test_a_call_whose_caller_died_leaves_
  the_server_alone``; before, the call came back, was answered again and
  killed the consumer again until it expired, rerunning and parking the
  casts delivered with it).
"""

import collections
import functools
import hashlib
import json
import threading
import time
import uuid

import pytest

from rpcmq.conductor.api import ConductorAPI
from rpcmq.exceptions import (
    CallInterrupted,
    MessagingTimeout,
    TransportError,
)
from rpcmq.notify.notifier import Notifier
from rpcmq.testing.imageserver import ImageServer
from rpcmq.tests.functional.cluster import ClusterError
from rpcmq.tests.functional.failover import (
    Ops,
    Recorder,
    Runs,
    call_once,
    call_stream,
    cast_stream,
    place_queue,
    queue_depth,
    queue_ready,
    restore,
    server_node,
    start_thread,
    summary,
    url_via,
)
from rpcmq.tests.functional.fixtures import (
    OSS,
    Cluster,
    key_for,
    pipeline_oss,
)
from rpcmq.tests.scenarios.rpc import Env, wait_for

CASTS = 1000
CAST_PACE = 0.004    # seconds between casts: about 4 s of publishing
CAST_TIMEOUT = 10
CALL_TIMEOUT = 5
# What "in time" allows beyond a timeout: a caller may wait up to 1 s more
# for a reply being handed over (reply.py), and the machine is loaded.
SLACK = 3.0
# What a call in flight at the kill may end with, besides its result.
CALL_FAULTS = {'MessagingTimeout', 'CallInterrupted'}


def unique(prefix):
    return '%s_%s' % (prefix, uuid.uuid4().hex[:8])


def report(name, fields):
    print('\n%s: %s' % (name, json.dumps(fields, sort_keys=True)))


def too_slow(ops, timeout):
    return [op for op in ops if op.end - op.start > timeout + SLACK]


def close_env(env):
    env.queues.add('%s_dead' % env.topic)
    env.close()


@pytest.mark.parametrize('clients', ['elsewhere', 'on_it'])
def test_casts_outlive_the_leader_of_their_queue(rabbit_cluster, clients):
    """1,000 casts are being published and run, and calls made, when the
    node that leads the topic's quorum queue is killed.

    ``elsewhere``: the caster and the server are connected to another node;
    only the queue loses its leader. ``on_it``: they are connected to the
    leader's node and lose their connections too; they reconnect while the
    queue elects a new leader (the confirming publisher waits
    ``rabbit_retry_interval`` before it reconnects, which keeps its casts
    out of RabbitMQ 3.10's election window; see the module's notes). The
    caller is connected to a third node either way.
    """
    cluster = rabbit_cluster
    topic = unique('failover_casts')
    victim = place_queue(cluster, topic, via=2)
    assert victim is not None
    others = [i for i in range(cluster.size) if i != victim]
    home = victim if clients == 'on_it' else others[0]
    env = Env(url_via(cluster, home))
    env.topic = topic
    call_env = Env(url_via(cluster, others[-1]))
    call_env.topic = topic
    casts, calls, ops = Runs(), Runs(), Ops()
    stop = threading.Event()
    try:
        server = env.serve([Recorder(casts, calls)], executor_size=8)
        assert server_node(cluster, server) == home
        caster = env.client(timeout=CAST_TIMEOUT)
        caller = call_env.client(timeout=CALL_TIMEOUT)
        publisher = start_thread(cast_stream, caster, ops, CASTS, CAST_PACE)
        calling = start_thread(call_stream, caller, ops, stop, 'call')

        # Mid-stream: casts are being published and run.
        assert wait_for(lambda: casts.total() >= 300, 30), casts.total()
        sent_at_kill = ops.sent['cast']
        assert sent_at_kill < CASTS
        kill_at = time.monotonic()
        cluster.kill(victim)

        # The queue gets a new leader among the two nodes left.
        assert wait_for(lambda: new_leader(cluster, topic, victim), 30)
        # Publishing goes on to the end; every cast() returns or raises.
        publisher.join(CASTS * CAST_PACE + CAST_TIMEOUT + 60)
        assert not publisher.is_alive(), ops.sent
        stop.set()
        calling.join(CALL_TIMEOUT + SLACK + 5)
        assert not calling.is_alive()

        # Every cast that returned is confirmed, and runs.
        assert env.transport.flush(60)
        succeeded = {op.id for op in ops.ok('cast')}
        assert wait_for(lambda: succeeded <= casts.ids(), 60), \
            sorted(succeeded - casts.ids())[:20]
        cast_summary = summary('cast', ops, casts, kill_at)
        cast_summary['parked'] = queue_depth(cluster, '%s_dead' % topic)
        call_summary = summary('call', ops, calls, kill_at)
        report('casts, leader %d killed, clients %s' % (victim, clients),
               dict(cast_summary, sent_at_kill=sent_at_kill))
        report('calls meanwhile', call_summary)

        assert ops.sent['cast'] == CASTS
        assert cast_summary['unfinished'] == 0
        assert cast_summary['lost'] == 0
        assert not too_slow(ops.all('cast'), CAST_TIMEOUT)
        # One failover is no reason to give up on a cast.
        assert not cast_summary['parked']
        # Casts sent after the kill went through.
        assert cast_summary['recovery_first_s'] is not None
        assert cast_summary['succeeded'] > sent_at_kill
        # Each call returned its result or raised, in time, and calls
        # went through again after the kill.
        assert not too_slow(ops.all('call'), CALL_TIMEOUT)
        assert ops.count('call', 'WrongResult') == 0
        assert call_summary['recovery_first_s'] is not None
    finally:
        stop.set()
        try:
            restore(cluster)
        finally:
            close_env(call_env)
            close_env(env)


def test_a_server_whose_node_dies_serves_again(rabbit_cluster):
    """Callers keep calling a server while the node the server is
    connected to is killed (the callers and the topic's queue leader are
    on the other two nodes)."""
    cluster = rabbit_cluster
    topic = unique('failover_calls')
    leader = place_queue(cluster, topic, via=2)
    assert leader is not None
    victim, client_home = [i for i in range(cluster.size) if i != leader]
    server_env = Env(url_via(cluster, victim))
    server_env.topic = topic
    client_env = Env(url_via(cluster, client_home))
    client_env.topic = topic
    calls, ops = Runs(), Ops()
    stop = threading.Event()
    try:
        server = server_env.serve([Recorder(Runs(), calls)], executor_size=4)
        assert server_node(cluster, server) == victim
        client = client_env.client(timeout=CALL_TIMEOUT)
        callers = [start_thread(call_stream, client, ops, stop, 'k%d' % i,
                                0.05) for i in range(6)]

        # Mid-stream: calls have returned, and some are running.
        assert wait_for(lambda: len(ops.ok('call')) >= 50, 30)
        assert wait_for(lambda: calls.active >= 2, 10)
        kill_at = time.monotonic()
        cluster.kill(victim)

        def served_again(n):
            return len([op for op in ops.ok('call')
                        if op.start >= kill_at]) >= n
        assert wait_for(lambda: served_again(1), 45)
        assert server_node(cluster, server) not in (None, victim)
        assert wait_for(lambda: served_again(30), 30)
        stop.set()
        for t in callers:
            t.join(CALL_TIMEOUT + SLACK + 5)
            assert not t.is_alive()

        result = summary('call', ops, calls, kill_at)
        in_flight = [op for op in ops.all('call')
                     if op.start < kill_at < op.end]
        result['in_flight_at_kill'] = collections.Counter(
            op.error or 'ok' for op in in_flight)
        report('calls, server node %d killed' % victim, result)
        assert in_flight
        assert {op.error for op in in_flight} <= CALL_FAULTS | {None}
        assert set(result['failed']) <= CALL_FAULTS
        assert not too_slow(ops.all('call'), CALL_TIMEOUT)
        # A call runs at most once, even when the broker hands it out again.
        assert result['duplicated_runs'] == 0
        assert result['unfinished'] == 0
    finally:
        stop.set()
        try:
            restore(cluster)
        finally:
            close_env(client_env)
            close_env(server_env)


def new_leader(cluster, topic, victim):
    """True once ``topic``'s queue is led by a node other than ``victim``.
    While the election runs, a live node may not list the queue at all
    (ClusterError): not yet, not a failure."""
    try:
        return cluster.queue_leader(topic) not in (None, victim)
    except ClusterError:
        return False


def need(condition, what):
    """A precondition of the scenario (a failure here is not the bug the
    test expects)."""
    if not condition:
        pytest.fail('scenario not set up: %s' % what)


def test_a_call_whose_caller_died_leaves_the_server_alone(rabbit_cluster):
    """A caller's node dies while its call waits in the queue behind busy
    workers; casts from a live client wait behind it. The server (on
    another node) must take the orphaned call without losing its
    connection, and run each cast once."""
    cluster = rabbit_cluster
    topic = unique('failover_orphan')
    leader = place_queue(cluster, topic, via=2)
    victim, home = [i for i in range(cluster.size) if i != leader]
    server_env = Env(url_via(cluster, home))
    live_env = Env(url_via(cluster, home))
    doomed_env = Env(url_via(cluster, victim))
    for env in (server_env, live_env, doomed_env):
        env.topic = topic
    casts, calls, ops = Runs(), Runs(), Ops()
    try:
        server = server_env.serve([Recorder(casts, calls)], executor_size=2)
        live = live_env.client(timeout=20)
        busy = [start_thread(functools.partial(
            live.call, {}, 'work', id='busy-%d' % i, seconds=3))
            for i in range(2)]
        need(wait_for(lambda: calls.active == 2, 10), 'workers busy')
        doomed = doomed_env.client(timeout=6)
        start_thread(functools.partial(call_once, doomed, ops, 'doomed'))
        need(wait_for(lambda: queue_ready(cluster, topic) == 1, 10),
             'the call queued')
        for i in range(20):
            live.cast({}, 'run', id='cast-%d' % i)
        need(live_env.transport.flush(10) and wait_for(
            lambda: queue_ready(cluster, topic) == 21, 10), 'casts queued')
        connection = server._listener._active
        need(calls.active == 2 and 'doomed' not in calls.ids(),
             'the call still waits')
        cluster.kill(victim)

        # The busy calls end; the server takes the orphaned call, then
        # the casts; once the call has expired, everything is settled.
        for t in busy:
            t.join(30)
        assert wait_for(lambda: len(casts.ids()) == 20, 30)
        need(wait_for(lambda: queue_ready(cluster, topic) == 0 and
                      queue_depth(cluster, topic) == 0, 40),
             'everything settled')
        report('orphaned call', {
            'duplicated_runs': sum(n - 1 for n in
                                   casts.duplicates().values()),
            'parked': queue_depth(cluster, '%s_dead' % topic),
            'reconnected': server._listener._active is not connection,
            'doomed_call': [op.error for op in ops.all('call')]})
        assert server._listener._active is connection
        assert casts.duplicates() == {}
        assert not queue_depth(cluster, '%s_dead' % topic)
    finally:
        try:
            restore(cluster)
        finally:
            for env in (doomed_env, live_env, server_env):
                close_env(env)


# -- a conductor batch --------------------------------------------------------

BATCH = 1000
CONDUCTOR_OPTS = {'conductor': {
    'max_inflight': 16, 'max_inflight_per_batch': 16, 'item_retries': 3,
    'retry_backoff': 0.2, 'retry_backoff_max': 1.0, 'fetch_timeout': 5,
    'store_timeout': 5, 'poll_interval': 0.1}}
# Each download takes 60 ms or more: items are in flight at the kill.
SLOW = '/slow/failover-%d.jpg?delay=0.02&chunks=4'


class SplitCluster(Cluster):
    """The daemons of ``fixtures.Cluster`` on ``daemon_url``; this
    process (submitting, asking for status, listening to batch.*) on
    ``client_url``."""

    def __init__(self, workdir, client_url, daemon_url, oss_endpoint,
                 **kwargs):
        super().__init__(workdir, client_url, oss_endpoint, **kwargs)
        self.rabbit_url = daemon_url  # what the daemons' configs name


@pytest.fixture
def images():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def oss():
    with pipeline_oss() as srv:
        yield srv


def bucket_keys(oss):
    backend = oss.backend
    with backend._lock:
        return set(backend._buckets[OSS['bucket']])


def totals(pipeline, batch_id):
    """The batch's totals, or None while the conductor cannot answer."""
    api = ConductorAPI(pipeline.transport, timeout=3,
                       topic=pipeline.conductor_topic)
    try:
        return api.status(batch_id)['totals']
    except (CallInterrupted, MessagingTimeout, TransportError):
        return None


def done_at_least(pipeline, batch_id, count):
    got = totals(pipeline, batch_id)
    return got is not None and got['done'] >= count


def test_a_batch_completes_while_a_node_is_killed_and_restarted(
        rabbit_cluster, postgres_schema_url, images, oss, tmp_path):
    """The conductor (on PostgreSQL) and both image servers are connected
    to the node that is killed mid-batch and restarted; they fail over to
    the other two. Their queues are led by another node (see the module's
    notes: a client that reconnects while its queue elects a leader loses
    its calls on RabbitMQ 3.10); this process submits and listens through
    the third node."""
    cluster = rabbit_cluster
    victim, leader, listener = 0, 1, 2
    pipeline = SplitCluster(
        tmp_path, url_via(cluster, listener, exclude=[victim]),
        url_via(cluster, victim), oss.endpoint,
        conductor_opts=CONDUCTOR_OPTS)
    db_url, _schema = postgres_schema_url
    try:
        place_queue(cluster, pipeline.image_topic, leader,
                    exchange=pipeline.control_exchange,
                    more=['%s.%s' % (pipeline.image_topic, host)
                          for host in pipeline.hosts])
        place_queue(cluster, pipeline.conductor_topic, leader,
                    exchange=pipeline.control_exchange,
                    more=['%s.%s' % (pipeline.conductor_topic,
                                     pipeline.conductor_host)])
        pipeline.start_servers()
        events = pipeline.listen()
        pipeline.start_conductor(db_url)
        for queue in (pipeline.conductor_topic, pipeline.image_topic):
            assert cluster.queue_leader(queue) == leader, queue

        urls = [images.url(SLOW % i) for i in range(BATCH)]
        before = bucket_keys(oss)
        batch_id = pipeline.submit([{'url': u} for u in urls])
        assert wait_for(lambda: done_at_least(pipeline, batch_id, 150), 60)
        at_kill = totals(pipeline, batch_id)
        assert at_kill['pending'] > 0 and at_kill['running'] > 0, at_kill
        kill_at = time.monotonic()
        cluster.kill(victim)
        # The batch goes on without the node...
        assert wait_for(lambda: done_at_least(
            pipeline, batch_id, at_kill['done'] + 100), 90), \
            (totals(pipeline, batch_id), pipeline.logs())
        progress_s = time.monotonic() - kill_at
        # ... and with it back.
        cluster.restart(victim)
        at_restart = totals(pipeline, batch_id)
        end = pipeline.wait_end(batch_id, timeout=180)

        # Once the conductor has exited, whatever it sent is in our
        # queue: a notification of ours sent after that comes last.
        assert pipeline.stop_conductor() == 0, pipeline.logs()
        marker = uuid.uuid4().hex
        Notifier(pipeline.transport, 'test').info(
            {}, 'batch.marker', {'batch_id': marker})
        assert wait_for(lambda: events.of('batch.marker', marker), 30)

        ends = events.of('batch.end', batch_id)
        items = events.of('batch.item', batch_id)
        puts = collections.Counter(
            r['key'] for r in oss.requests('PutObject')
            if r['status'] == 200)
        report('batch of %d, node %d killed' % (BATCH, victim), {
            'done_at_kill': at_kill['done'],
            'running_at_kill': at_kill['running'],
            'seconds_to_100_more_done': round(progress_s, 1),
            'done_at_restart': (at_restart or {}).get('done'),
            'retried_items': sum(1 for i in end['items']
                                 if i['attempts'] > 1),
            'max_attempts': max(i['attempts'] for i in end['items']),
            'keys_put_more_than_once': sum(1 for n in puts.values()
                                           if n > 1),
            'batch_item_events': len(items),
            'batch_end_events': len(ends)})

        assert len(ends) == 1, [e['event_id'] for e in ends]
        assert len(events.of('batch.start', batch_id)) == 1
        assert end['state'] == 'done'
        assert end['totals'] == {'total': BATCH, 'pending': 0,
                                 'running': 0, 'done': BATCH, 'failed': 0,
                                 'cancelled': 0}
        assert sorted(i['idx'] for i in end['items']) == list(range(BATCH))
        assert len({e['event_id'] for e in items}) == BATCH
        assert {e['idx'] for e in items} == set(range(BATCH))
        # Every object is stored once: under the key the endpoint derives
        # from its URL, with the bytes that were fetched; nothing else.
        assert bucket_keys(oss) - before == {key_for(u) for u in urls}
        by_url = {i['url']: i['result'] for i in end['items']}
        for url in urls:
            result = by_url[url]
            assert result['key'] == key_for(url)
            body = oss.get_object(OSS['bucket'], result['key'])
            assert len(body) == result['size']
            assert hashlib.sha256(body).hexdigest() == result['sha256']
    finally:
        try:
            restore(cluster)
        finally:
            codes = pipeline.close()
    assert set(codes.values()) <= {0, None}, (codes, pipeline.logs())
