"""Paired A/B of two rpcmq client trees; one JSON line per scenario.

The client-side twin of ``bench_pair.py``: one ``rpcmq-server`` daemon
(the ``diag`` endpoint, classic queues, this tree) serves both sides, and
each block of calls runs in a fresh client process from tree A or tree B
(``PYTHONPATH``), alternating which goes first, so both see the same
moments of a noisy machine. Each scenario prints the median rate of each
side, the median of the pairs' ratios (B over A), how many pairs B won,
and the median client CPU per call (``time.process_time()`` of the
client process: its caller threads included) and broker CPU per call
(``bench_pair.broker_pid``).

  seq   1,000 sequential calls
  conc  3,200 calls from 16 threads

Usage: python tools/bench_client_pair.py A B [--executor eventlet]
       [--rounds 10] [--url rabbit://guest:guest@127.0.0.1:5672/]
       [--broker-pid PID]

A and B are source trees (``git archive REV | tar x -C DIR``).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

SCENARIOS = (('seq', 1000), ('conc', 3200))
CALLERS = 16


def client_block(url, topic, scenario, n, broker):
    """In the client process: warm up, run one block, print its numbers
    (``broker``: the broker's pid, 0 if not known)."""
    from bench_pair import broker_cpu_us

    import rpcmq
    from rpcmq.testing.server import make_conf
    transport = rpcmq.get_transport(
        make_conf(**{'rabbit.queue_type': 'classic'}), url=url)
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                             timeout=30)

    def calls(k):
        for i in range(k):
            client.call({}, 'echo', x=i)
    calls(100)
    t0, c0 = time.perf_counter(), time.process_time()
    b0 = broker_cpu_us(broker)
    if scenario == 'seq':
        calls(n)
    else:
        threads = [threading.Thread(target=calls, args=(n // CALLERS,))
                   for _ in range(CALLERS)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({'per_s': n / elapsed, 'cpu_us': cpu * 1e6 / n,
                      'broker_us': (broker_cpu_us(broker) - b0) / n}))
    transport.cleanup()


def main():
    if sys.argv[1:2] == ['--client-block']:
        url, topic, scenario, n, broker = sys.argv[2:7]
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        return client_block(url, topic, scenario, int(n), int(broker))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--broker-pid', type=int,
                    help='the broker\'s pid (default: the one beam.smp)')
    args = ap.parse_args()

    import rpcmq
    from rpcmq.testing.server import make_conf
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_rpc
    from bench_pair import broker_pid
    args.broker_pid = broker_pid(args.broker_pid) or 0

    transport = rpcmq.get_transport(
        make_conf(**{'rabbit.queue_type': 'classic'}), url=args.url)
    topic = 'cpair_%s' % uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as workdir:
        server = bench_rpc.start_server(args.url, args.executor, topic,
                                        workdir, queue_type='classic')
        try:
            bench_rpc.wait_up(rpcmq.RPCClient(
                transport, rpcmq.Target(topic=topic), timeout=30))
            run(args, topic)
        finally:
            bench_rpc.stop_server(args.url, server, topic)
            transport.cleanup()


def run(args, topic):
    blocks = {(s, tree): [] for s, _ in SCENARIOS for tree in 'ab'}
    for round_ in range(args.rounds):
        order = 'ab' if round_ % 2 == 0 else 'ba'
        for scenario, n in SCENARIOS:
            for side in order:
                tree = os.path.abspath(getattr(args, side))
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__),
                     '--client-block', args.url, topic, scenario, str(n),
                     str(args.broker_pid)],
                    capture_output=True, text=True, check=True,
                    env=dict(os.environ, PYTHONPATH=tree))
                blocks[scenario, side].append(
                    json.loads(out.stdout.splitlines()[-1]))
    from bench_pair import _broker, _median, pair_summary
    for scenario, _ in SCENARIOS:
        a, b = blocks[scenario, 'a'], blocks[scenario, 'b']
        print(json.dumps({
            'scenario': scenario, 'server_executor': args.executor,
            'a': args.a, 'b': args.b,
            **pair_summary([x['per_s'] for x in a], [y['per_s'] for y in b]),
            'a_client_cpu_us': _median(x['cpu_us'] for x in a),
            'b_client_cpu_us': _median(x['cpu_us'] for x in b),
            'a_broker_cpu_us': _broker(args, [x['broker_us'] for x in a]),
            'b_broker_cpu_us': _broker(args, [y['broker_us'] for y in b])}),
            flush=True)


if __name__ == '__main__':
    main()
