"""Benchmark rpcmq RPC over a real broker; one JSON line per scenario.

An ``rpcmq-server`` daemon hosting the ``diag`` endpoint runs as a child
process with the chosen executor; this process is the client.

  call_seq   sequential calls from one caller: calls/s, p50, p99 (ms)
  call_conc  16 concurrent callers (threads): calls/s
  cast       casts/s until the server has handled them all

Usage: python tools/bench_rpc.py [--url rabbit://guest:guest@127.0.0.1:5672/]
       [--executor eventlet|threading] [--n 2000] [--conc 16]
       [--queue-type quorum|classic] [--signed]
       [--oslo-client PYTHON]

``--oslo-client``: the server runs with ``oslo_compat`` (exchange
``openstack``, classic queues) and the client is oslo.messaging's
(``bench_oslo_client.py`` run by PYTHON, which has oslo.messaging).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import rpcmq
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf

# --signed: every request and reply signed and checked (HMAC-SHA256).
BENCH_KEY = 'bench:bench-signing-secret-0123456789'


def start_server(url, executor, topic, workdir, signed=False,
                 queue_type='quorum', oslo=False, env=None):
    """An ``rpcmq-server`` serving ``diag`` (unsafe methods on) on
    ``topic``; ``env``: its environment (default: this process's)."""
    conf = os.path.join(workdir, '%s.conf' % topic)
    with open(conf, 'w') as f:
        f.write('[DEFAULT]\ntransport_url = %s\nendpoints = diag\n'
                'topic = %s\nhost = bench\nexecutor = %s\n'
                'log_level = WARNING\n' % (url, topic, executor))
        if oslo:
            f.write('oslo_compat = true\ncontrol_exchange = openstack\n')
        f.write('[diag]\nunsafe_methods = true\n')
        f.write('[rabbit]\nqueue_type = %s\n' % queue_type)
        if signed:
            f.write('[security]\nsigning_keys = %s\nrequire_signed = '
                    'true\n' % BENCH_KEY)
    exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq-server')
    return subprocess.Popen([exe, '--config-file', conf], env=env)


def stop_server(url, server, topic):
    """Stop a server of ``start_server``; delete its topic's queues (they
    are durable and would outlive the run)."""
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    delete_entities(url, [topic, topic + '.bench', topic + '_dead'])


def wait_up(client, timeout=30):
    """Call ``ping`` until the server answers; its answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.prepare(timeout=1).call({}, 'ping')
        except rpcmq.MessagingTimeout:
            if time.monotonic() > deadline:
                raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--conc', type=int, default=16)
    ap.add_argument('--signed', action='store_true',
                    help='sign every request (server requires it)')
    ap.add_argument('--queue-type', default='quorum',
                    choices=['quorum', 'classic'],
                    help='[rabbit] queue_type of the request queues')
    ap.add_argument('--oslo-client', metavar='PYTHON',
                    help='serve oslo.messaging\'s client (run by PYTHON) '
                         'with oslo_compat, classic queues')
    a = ap.parse_args()
    if a.oslo_client:
        a.queue_type = 'classic'
    topic = 'bench_%s' % uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(a.url, a.executor, topic, workdir, a.signed,
                              a.queue_type, oslo=bool(a.oslo_client))
        try:
            if a.oslo_client:
                subprocess.run([a.oslo_client, os.path.join(
                    os.path.dirname(os.path.abspath(__file__)),
                    'bench_oslo_client.py'), '--url', a.url, '--topic',
                    topic, '--n', str(a.n), '--conc', str(a.conc),
                    '--executor', a.executor], check=True, timeout=900)
            else:
                run(a, topic)
        finally:
            stop_server(a.url, server, topic)


def run(a, topic):
    def emit(**fields):
        fields = dict({'sys': 'rpcmq', 'queue_type': a.queue_type},
                      **fields)
        if a.signed:
            fields['signed'] = True
        print(json.dumps(fields), flush=True)

    keys = {'security.signing_keys': [BENCH_KEY]} if a.signed else {}
    keys['rabbit.queue_type'] = a.queue_type
    transport = rpcmq.get_transport(make_conf(**keys), url=a.url)
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                             timeout=30)
    wait_up(client)
    for _ in range(50):
        client.call({}, 'echo', x=1)

    lat = []
    t0 = time.perf_counter()
    for i in range(a.n):
        s = time.perf_counter()
        client.call({}, 'echo', x=i)
        lat.append(time.perf_counter() - s)
    el = time.perf_counter() - t0
    lat.sort()
    emit(executor=a.executor, scenario='call_seq', n=a.n,
         calls_per_s=round(a.n / el, 1),
         p50_ms=round(lat[len(lat) // 2] * 1e3, 3),
         p99_ms=round(lat[int(len(lat) * 0.99)] * 1e3, 3))

    per = a.n // a.conc
    errors = []

    def worker():
        try:
            for i in range(per):
                client.call({}, 'echo', x=i)
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=worker) for _ in range(a.conc)]
    t0 = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    el = time.perf_counter() - t0
    emit(executor=a.executor, scenario='call_conc', conc=a.conc,
         n=per * a.conc, calls_per_s=round(per * a.conc / el, 1),
         errors=len(errors))

    base = client.call({}, 'count')
    t0 = time.perf_counter()
    for _ in range(a.n):
        client.cast({}, 'bump')
    while client.call({}, 'count') < base + a.n:
        time.sleep(0.005)
    el = time.perf_counter() - t0
    emit(executor=a.executor, scenario='cast', n=a.n,
         casts_per_s=round(a.n / el, 1),
         confirms=transport.conf.rabbit.publisher_confirms)
    transport.cleanup()


if __name__ == '__main__':
    main()
