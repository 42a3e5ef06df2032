"""Paired A/B of two rpcmq server trees; one JSON line per scenario.

Two ``rpcmq-server`` daemons (the ``diag`` endpoint, classic queues) run
side by side, each from its own source tree (``PYTHONPATH``), and this
process calls them in turn, block by block, alternating which goes
first: both see the same moments of a noisy machine, so the ratio of
each pair of blocks means more than two runs an hour apart. Each
scenario prints the median rate of each side, the median of the pairs'
ratios (B over A), how many pairs B won, and the median CPU per request
of each server (``/proc/<pid>/task/*/schedstat``), of this client and of
the broker (its ``beam.smp``: the one running, or ``--broker-pid``).

  seq   500 sequential calls
  conc  1,600 calls from 16 threads
  cast  2,000 casts until the server has run them all

Usage: python tools/bench_pair.py A B [--executor eventlet|threading]
       [--rounds 8] [--url rabbit://guest:guest@127.0.0.1:5672/]
       [--broker-pid PID]

A and B are source trees (``git archive REV | tar x -C DIR``), each
optionally ``:eventlet`` or ``:threading`` to give it its own executor.
Trees older than the move of the RabbitMQ driver need
``rpcmq/transport/rabbit.py`` with ``from rpcmq.transport.drivers import
RabbitDriver`` (the entry points name it).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

import rpcmq
from rpcmq.testing.server import make_conf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rpc  # noqa: E402

SCENARIOS = (('seq', 500), ('conc', 1600), ('cast', 2000))
CALLERS = 16


def cpu_us(pid):
    """CPU time of every thread of ``pid`` so far, in microseconds (of
    the threads alive now: the client's own is ``time.process_time()``,
    which counts its callers' threads after they ended too)."""
    total = 0
    for task in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/schedstat' % (pid, task)) as f:
                total += int(f.read().split()[0])
        except OSError:  # the thread ended meanwhile
            pass
    return total / 1e3


def broker_pid(given=None):
    """The broker's pid: ``given``, else the one ``beam.smp`` running
    (None if there are several: pass ``--broker-pid``)."""
    if given:
        return given
    beams = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/comm' % pid) as f:
                if f.read().strip() == 'beam.smp':
                    beams.append(int(pid))
        except OSError:
            pass
    return beams[0] if len(beams) == 1 else None


def broker_cpu_us(pid):
    """``cpu_us`` of the broker, 0 when it is not known."""
    return cpu_us(pid) if pid else 0


def start(url, tree, executor, topic, workdir):
    """``bench_rpc``'s server (classic queues), run from ``tree``."""
    return bench_rpc.start_server(
        url, executor, topic, workdir, queue_type='classic',
        env=dict(os.environ, PYTHONPATH=os.path.abspath(tree)))


def seq(client, n):
    for i in range(n):
        client.call({}, 'echo', x=i)


def conc(client, n):
    errors = []

    def caller():
        try:
            for i in range(n // CALLERS):
                client.call({}, 'echo', x=i)
        except Exception as exc:  # shown below: a benchmark, not a test
            errors.append(exc)
    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    if errors:
        raise errors[0]


def cast(client, n):
    base = client.call({}, 'count')
    for _ in range(n):
        client.cast({}, 'bump')
    while client.call({}, 'count') < base + n:
        time.sleep(0.002)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--broker-pid', type=int,
                    help='the broker\'s pid (default: the one beam.smp)')
    args = ap.parse_args()
    args.broker_pid = broker_pid(args.broker_pid)
    transport = rpcmq.get_transport(
        make_conf(**{'rabbit.queue_type': 'classic'}), url=args.url)
    sides, started = [], []  # started: (server, topic)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for spec in (args.a, args.b):
                tree, _, executor = spec.partition(':')
                topic = 'pair_%s' % uuid.uuid4().hex[:8]
                server = start(args.url, tree, executor or args.executor,
                               topic, workdir)
                started.append((server, topic))
                client = rpcmq.RPCClient(transport,
                                         rpcmq.Target(topic=topic),
                                         timeout=30)
                sides.append((spec, server, client))
            for _, _, client in sides:
                bench_rpc.wait_up(client)
                seq(client, 100)  # warm up
            run(args, sides)
        finally:
            for server, topic in started:
                bench_rpc.stop_server(args.url, server, topic)
            transport.cleanup()


def run(args, sides):
    work = {'seq': seq, 'conc': conc, 'cast': cast}
    rate = {(s, i): [] for s, _ in SCENARIOS for i in (0, 1)}
    server_cpu = {(s, i): [] for s, _ in SCENARIOS for i in (0, 1)}
    client_cpu = {(s, i): [] for s, _ in SCENARIOS for i in (0, 1)}
    broker_cpu = {(s, i): [] for s, _ in SCENARIOS for i in (0, 1)}
    for round_ in range(args.rounds):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for scenario, n in SCENARIOS:
            for i in order:
                _, server, client = sides[i]
                s0, c0 = cpu_us(server.pid), time.process_time()
                b0 = broker_cpu_us(args.broker_pid)
                t0 = time.perf_counter()
                work[scenario](client, n)
                elapsed = time.perf_counter() - t0
                rate[scenario, i].append(n / elapsed)
                server_cpu[scenario, i].append((cpu_us(server.pid) - s0) / n)
                client_cpu[scenario, i].append(
                    (time.process_time() - c0) * 1e6 / n)
                broker_cpu[scenario, i].append(
                    (broker_cpu_us(args.broker_pid) - b0) / n)
    for scenario, _ in SCENARIOS:
        print(json.dumps({
            'scenario': scenario, 'executor': args.executor,
            'a': sides[0][0], 'b': sides[1][0],
            **pair_summary(rate[scenario, 0], rate[scenario, 1]),
            'a_server_cpu_us': _median(server_cpu[scenario, 0]),
            'b_server_cpu_us': _median(server_cpu[scenario, 1]),
            'a_client_cpu_us': _median(client_cpu[scenario, 0]),
            'b_client_cpu_us': _median(client_cpu[scenario, 1]),
            'a_broker_cpu_us': _broker(args, broker_cpu[scenario, 0]),
            'b_broker_cpu_us': _broker(args, broker_cpu[scenario, 1])}),
            flush=True)


def pair_summary(a_rates, b_rates):
    """The pairs, each side's median rate, the median of the pairs' ratios
    (B over A) and how many pairs B won."""
    ratios = [b / a for a, b in zip(a_rates, b_rates, strict=True)]
    return {'pairs': len(ratios), 'a_per_s': _median(a_rates),
            'b_per_s': _median(b_rates),
            'b_over_a': round(statistics.median(ratios), 3),
            'b_won': sum(r > 1 for r in ratios)}


def _broker(args, values):
    return _median(values) if args.broker_pid else None


def _median(values):
    return round(statistics.median(values), 1)


if __name__ == '__main__':
    main()
