"""How fast a server runs a backlog of oslo.messaging casts: rpcmq's server
in ``oslo_compat`` beside oslo.messaging's own, one JSON line each.

The cast scenario of ``bench_rpc.py --oslo-client`` times casts until the
server has run them all, which oslo.messaging's client bounds (both
servers keep up with what it publishes). Here the server is out of the
way while oslo.messaging's client publishes ``--n`` casts to its queue;
then it starts and runs them. The run begins when the broker starts
delivering (the queue's ready count drops below n: polled every 2 ms)
and ends when the last cast ran (the endpoint's ``bumps``, read on the
server's own queue, which the backlog does not hold up): casts/s = n /
(last - first delivery), start-up excluded. (Not from the first cast
run: oslo.messaging acks each message as it takes it, and its eventlet
server may take and ack thousands before its first green thread runs.)

  rpcmq-oslo-compat  ``rpcmq-server`` (``diag`` endpoint, ``oslo_compat``)
  oslo.messaging     ``bench_oslo_server.py`` run by ``--oslo-python``

Usage: python tools/bench_backlog.py --oslo-python PYTHON
       [--executor eventlet|threading] [--n 20000] [--url rabbit://...]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import kombu

import rpcmq
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = 'bench'  # the server name both kinds serve under


def start(kind, a, topic, workdir):
    if kind == 'rpcmq':
        return bench_rpc.start_server(a.url, a.executor, topic, workdir,
                                      queue_type='classic', oslo=True)
    return subprocess.Popen([a.oslo_python, os.path.join(
        HERE, 'bench_oslo_server.py'), '--url', a.url, '--topic', topic,
        '--server', SERVER, '--executor', a.executor])


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def ready_messages(channel, queue):
    return channel.queue_declare(queue, passive=True)[1]


def delivery_began(channel, queue, n, timeout=120):
    """time.time() at which ``queue`` first held fewer than n ready
    messages (the broker began delivering to the new consumer)."""
    deadline = time.monotonic() + timeout
    while ready_messages(channel, queue) >= n:
        if time.monotonic() > deadline:
            raise SystemExit('no delivery from %s within %ss' % (queue,
                                                                 timeout))
        time.sleep(0.002)
    return time.time()


def run(kind, a, transport):
    topic = 'backlog_%s' % uuid.uuid4().hex[:8]
    pinned = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic,
                                                     server=SERVER),
                             timeout=30)
    with tempfile.TemporaryDirectory() as workdir, kombu.Connection(
            a.url.replace('rabbit://', 'amqp://', 1)) as conn:
        channel = conn.default_channel
        try:
            proc = start(kind, a, topic, workdir)  # declares the queues
            try:
                bench_rpc.wait_up(pinned, 60)
            finally:
                stop(proc)
            subprocess.run([a.oslo_python, os.path.join(
                HERE, 'bench_oslo_client.py'), '--url', a.url, '--topic',
                topic, '--casts-only', str(a.n)], check=True, timeout=900)
            queued = ready_messages(channel, topic)
            if queued < a.n:
                raise SystemExit('%s: only %d of %d casts queued'
                                 % (kind, queued, a.n))
            proc = start(kind, a, topic, workdir)
            try:
                began = delivery_began(channel, topic, a.n)
                bench_rpc.wait_up(pinned, 60)
                deadline = time.monotonic() + 600
                while True:
                    seen = pinned.call({}, 'bumps')
                    if seen['count'] >= a.n:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit('%s ran %d of %d casts in 600 s'
                                         % (kind, seen['count'], a.n))
                    time.sleep(0.1)
            finally:
                stop(proc)
        finally:
            delete_entities(a.url, [topic, '%s.%s' % (topic, SERVER)])
    span = seen['last'] - began
    print(json.dumps({
        'sys': 'rpcmq-oslo-compat' if kind == 'rpcmq' else 'oslo.messaging',
        'executor': a.executor, 'scenario': 'cast_backlog', 'n': a.n,
        'casts_per_s': round(a.n / span, 1)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--oslo-python', required=True)
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    ap.add_argument('--n', type=int, default=20000)
    ap.add_argument('--servers', default='rpcmq,oslo',
                    help='which servers to run, in this order')
    a = ap.parse_args()
    transport = rpcmq.get_transport(make_conf(
        oslo_compat=True, control_exchange='openstack',
        **{'rabbit.queue_type': 'classic'}), url=a.url)
    try:
        for kind in a.servers.split(','):
            run(kind, a, transport)
    finally:
        transport.cleanup()


if __name__ == '__main__':
    main()
