"""Benchmark failover on a 3-node RabbitMQ cluster; one JSON line each.

Starts a 3-node cluster of its own (``RabbitCluster`` from
rpcmq.tests.functional.cluster: the installed RabbitMQ, its own ports and
directories, 15-25 s to start; stopped at the end), then measures:

Faults (quorum queues). The server and the clients run in this process,
each on its own transport; the server's endpoint records every run of
every request id, so duplicates and losses are counted, not guessed.

  leader_kill_casts       casts at --rate a second for --seconds; after a
                          third of that, the node leading the topic's
                          quorum queue is killed (SIGKILL). The caster and
                          the server are connected to another node.
  leader_kill_casts_colocated
                          the same, with the caster and the server
                          connected to the leader's node (they lose their
                          connections too)
  server_node_kill_calls  --conc callers call for --seconds; after a third
                          of that, the node the server is connected to is
                          killed. The callers and the queue's leader are
                          on the other two nodes.

  Fields: sent, succeeded, failed ({error type: count}), duplicated_runs
  (runs beyond the first, over all ids), lost (cast() returned and was
  confirmed, or call() returned, yet it never ran), failed_not_run (calls
  that raised and never ran: their callers know),
  ran_after_error (raised to the caller, yet ran), parked (casts moved to
  the dead-letter queue), recovery_first_s (from the kill to the first
  success of a request sent after it: its run for a cast, its reply for a
  call), recovery_full_s (from the kill to the end of the first 1 s window,
  after that first success, with at least 90 % of the successes a second
  before the kill; null if never within the run), max_op_seconds (longest
  cast() or call(), sending to return), flushed (every cast confirmed).
  After each fault the killed node is restarted (restart_s).

Throughput (an ``rpcmq-server`` daemon with the diag endpoint,
--executor; --tput-seconds per measurement), same run, alternating:

  broker cluster (the 3 nodes; the daemon and the client connect to the
  first) or single (--single-url, by default the machine's broker on
  127.0.0.1:5672), queue_type quorum or classic: calls_per_s (--conc
  callers calling echo), casts_per_s (casts as fast as cast() returns for
  --tput-seconds, until the server ran them all). A last line gives the
  ratios.

Usage: python tools/bench_failover.py [--single-url rabbit://...]
       [--seconds 9] [--rate 200] [--conc 8] [--tput-seconds 5]
       [--executor eventlet|threading] [--only faults|throughput]
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid

import rpcmq
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.cluster import RabbitCluster
from rpcmq.tests.functional.failover import (
    Ops,
    Recorder,
    Runs,
    call_stream,
    cast_stream,
    place_queue,
    queue_depth,
    restore,
    server_node,
    start_thread,
    summary,
    url_via,
)
from rpcmq.tests.scenarios.rpc import Env, wait_for
from rpcmq.transport.url import parse_url

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rpc  # noqa: E402

CAST_TIMEOUT = 10
CALL_TIMEOUT = 5


def emit(**fields):
    print(json.dumps(dict({'sys': 'rpcmq'}, **fields)), flush=True)


def close(*envs):
    for env in envs:
        env.queues.add('%s_dead' % env.topic)
        env.close()


def kill(cluster, victim):
    """Kill node ``victim``; its time.monotonic()."""
    kill_at = time.monotonic()
    cluster.kill(victim)
    return kill_at


def restart(cluster):
    started = time.monotonic()
    restore(cluster)
    return round(time.monotonic() - started, 1)


# -- faults -------------------------------------------------------------------

def fault_casts(cluster, a, colocated):
    topic = 'benchfo_%s' % uuid.uuid4().hex[:8]
    victim = place_queue(cluster, topic, via=cluster.size - 1)
    home = victim if colocated else (victim + 1) % cluster.size
    env = Env(url_via(cluster, home))
    env.topic = topic
    casts, ops = Runs(), Ops()
    fields = {}
    try:
        server = env.serve([Recorder(casts)], executor_size=8)
        fields['server_node'] = server_node(cluster, server)
        client = env.client(timeout=CAST_TIMEOUT)
        n = int(a.rate * a.seconds)
        publisher = start_thread(cast_stream, client, ops, n, 0.0, 'cast',
                                 None, a.rate)
        time.sleep(a.seconds / 3.0)  # the schedule of the fault
        kill_at = kill(cluster, victim)
        publisher.join()
        fields['flushed'] = env.transport.flush(60)
        succeeded = {op.id for op in ops.ok('cast')}
        wait_for(lambda: succeeded <= casts.ids(), 60)
        fields.update(summary('cast', ops, casts, kill_at))
        fields['parked'] = queue_depth(cluster, '%s_dead' % topic) or 0
    finally:
        fields['restart_s'] = restart(cluster)
        close(env)
    emit(scenario='fault', fault='leader_kill_casts_colocated' if colocated
         else 'leader_kill_casts', kind='cast', queue_type='quorum',
         victim=victim, clients_node=home, rate=a.rate, seconds=a.seconds,
         **fields)


def fault_calls(cluster, a):
    topic = 'benchfo_%s' % uuid.uuid4().hex[:8]
    leader = place_queue(cluster, topic, via=cluster.size - 1)
    victim, client_home = [i for i in range(cluster.size) if i != leader]
    server_env = Env(url_via(cluster, victim))
    client_env = Env(url_via(cluster, client_home))
    server_env.topic = client_env.topic = topic
    calls, ops = Runs(), Ops()
    stop = threading.Event()
    fields = {}
    try:
        server_env.serve([Recorder(Runs(), calls)], executor_size=a.conc)
        client = client_env.client(timeout=CALL_TIMEOUT)
        callers = [start_thread(call_stream, client, ops, stop, 'k%d' % i)
                   for i in range(a.conc)]
        time.sleep(a.seconds / 3.0)  # the schedule of the fault
        kill_at = kill(cluster, victim)
        time.sleep(a.seconds * 2 / 3.0)
        stop.set()
        for t in callers:
            t.join(CALL_TIMEOUT + 5)
        fields.update(summary('call', ops, calls, kill_at))
        fields['in_flight_at_kill'] = len(
            [op for op in ops.all('call') if op.start < kill_at < op.end])
    finally:
        stop.set()
        fields['restart_s'] = restart(cluster)
        close(client_env, server_env)
    emit(scenario='fault', fault='server_node_kill_calls', kind='call',
         queue_type='quorum', victim=victim, clients_node=client_home,
         queue_leader=leader, conc=a.conc, seconds=a.seconds, **fields)


# -- throughput ---------------------------------------------------------------

def throughput(url, broker, queue_type, a, workdir):
    topic = 'benchfo_%s' % uuid.uuid4().hex[:8]
    server = bench_rpc.start_server(url, a.executor, topic, workdir,
                                    queue_type=queue_type)
    transport = rpcmq.get_transport(make_conf(**{
        'rabbit.queue_type': queue_type}), url=url)
    try:
        client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                                 timeout=30)
        bench_rpc.wait_up(client, 60)
        for _ in range(50):
            client.call({}, 'echo', x=1)

        done, errors = [], []

        def caller(until):
            n = 0
            try:
                while time.monotonic() < until:
                    client.call({}, 'echo', x=n)
                    n += 1
            except Exception as exc:
                errors.append(repr(exc))
            done.append(n)
        started = time.monotonic()
        threads = [threading.Thread(target=caller,
                                    args=(started + a.tput_seconds,))
                   for _ in range(a.conc)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        calls_per_s = sum(done) / (time.monotonic() - started)

        base = client.call({}, 'count')
        started = time.monotonic()
        sent = 0
        while time.monotonic() < started + a.tput_seconds:
            client.cast({}, 'bump')
            sent += 1
        published = time.monotonic() - started
        while client.call({}, 'count') < base + sent:
            time.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        bench_rpc.stop_server(url, server, topic)
        transport.cleanup()
    result = {'calls_per_s': round(calls_per_s, 1),
              'casts_per_s': round(sent / elapsed, 1)}
    emit(scenario='throughput', broker=broker, queue_type=queue_type,
         executor=a.executor, conc=a.conc, seconds=a.tput_seconds,
         casts_sent=sent, casts_published_per_s=round(sent / published, 1),
         call_errors=len(errors), **result)
    return result


def single_node_reachable(url):
    host = parse_url(url).hosts[0]
    try:
        socket.create_connection((host.hostname, host.port or 5672),
                                 timeout=2).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--single-url',
                    default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--seconds', type=float, default=9.0,
                    help='length of each fault run (the kill at 1/3)')
    ap.add_argument('--rate', type=float, default=200.0,
                    help='casts a second during leader_kill_casts')
    ap.add_argument('--conc', type=int, default=8)
    ap.add_argument('--tput-seconds', type=float, default=5.0)
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    ap.add_argument('--only', choices=['faults', 'throughput'])
    a = ap.parse_args()

    cluster = RabbitCluster()
    why = cluster.available()
    if why:
        raise SystemExit(why)
    cluster.start()
    emit(scenario='cluster', nodes=cluster.size,
         start_s=round(cluster.start_seconds, 1))
    try:
        if a.only != 'throughput':
            fault_casts(cluster, a, colocated=False)
            fault_casts(cluster, a, colocated=True)
            fault_calls(cluster, a)
        if a.only != 'faults':
            brokers = [('cluster', cluster.url())]
            if single_node_reachable(a.single_url):
                brokers.append(('single', a.single_url))
            else:
                emit(scenario='throughput', broker='single',
                     error='%s is unreachable' % a.single_url)
            results = {}
            with tempfile.TemporaryDirectory() as workdir:
                for queue_type in ('quorum', 'classic'):
                    for broker, url in brokers:
                        results[broker, queue_type] = throughput(
                            url, broker, queue_type, a, workdir)
            ratios(results)
    finally:
        cluster.stop()


def ratios(results):
    """cluster / single per queue type, quorum / classic per broker."""
    out = {}
    for metric in ('calls_per_s', 'casts_per_s'):
        for qt in ('quorum', 'classic'):
            if ('single', qt) in results:
                out['%s_cluster_over_single_%s' % (metric, qt)] = round(
                    results['cluster', qt][metric] /
                    results['single', qt][metric], 3)
        for broker in ('cluster', 'single'):
            if (broker, 'classic') in results:
                out['%s_quorum_over_classic_%s' % (metric, broker)] = round(
                    results[broker, 'quorum'][metric] /
                    results[broker, 'classic'][metric], 3)
    emit(scenario='throughput_ratios', **out)


if __name__ == '__main__':
    main()
