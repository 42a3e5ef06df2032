"""Cross the clients and servers of sequential calls; JSON lines.

Which side of a sequential call makes rpcmq slower or faster than the
thinnest RPC on kombu? Each round runs four pairs, one after the other:
kombu's bare client and rpcmq's client, each against an ``rpcmq-server``
daemon (``diag``, eventlet by default, classic queues) and against a bare
kombu server (one thread: consume, reply, ack, as
``../shared/bench/kombu_limit_bench.py`` does; its reply is rpcmq's
``{"result": x}``). Each pair prints its calls/s; the last line has every
pair's median over the rounds.

Usage: python tools/bench_cross.py [--rounds 4] [--n 2000]
       [--executor eventlet|threading]
       [--url rabbit://guest:guest@127.0.0.1:5672/]
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid

from kombu import Connection, Consumer, Producer, Queue

import rpcmq
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rpc  # noqa: E402

WARMUP = 200


def amqp_url(url):
    return url.replace('rabbit://', 'amqp://', 1)


def kombu_server(url, queue, ready, stop):
    """The bare server: the queue rpcmq declared, one reply per request."""
    with Connection(amqp_url(url)) as conn:
        channel = conn.channel()
        producer = Producer(conn.channel())

        def on_request(body, message):
            reply_to = message.properties.get('reply_to')
            if reply_to:
                producer.publish(
                    {'result': body['args']['x']}, routing_key=reply_to,
                    correlation_id=message.properties['correlation_id'],
                    serializer='json')
            message.ack()
        with Consumer(channel, queues=[Queue(queue, no_declare=True)],
                      callbacks=[on_request], prefetch_count=64):
            ready.set()
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass


def kombu_client(url, queue, n):
    """Sequential calls by the bare client (its own reply queue)."""
    with Connection(amqp_url(url)) as conn:
        channel = conn.channel()
        replies = Queue('reply_' + uuid.uuid4().hex, channel=channel,
                        exclusive=True, auto_delete=True)
        replies.declare()
        producer = Producer(conn.channel())
        got = {}

        def on_reply(body, message):
            got[message.properties['correlation_id']] = body
            message.ack()

        def call(i):
            cid = uuid.uuid4().hex
            producer.publish({'method': 'echo', 'args': {'x': i}},
                             routing_key=queue, reply_to=replies.name,
                             correlation_id=cid, serializer='json')
            while cid not in got:
                conn.drain_events(timeout=10)
            del got[cid]
        with Consumer(channel, queues=[replies], callbacks=[on_reply]):
            return timed(call, n)


def rpcmq_client(url, topic, n):
    transport = rpcmq.get_transport(conf(), url=url)
    try:
        client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic),
                                 timeout=10)
        return timed(lambda i: client.call({}, 'echo', x=i), n)
    finally:
        transport.cleanup()


def timed(call, n):
    for i in range(WARMUP):
        call(i)
    started = time.perf_counter()
    for i in range(n):
        call(i)
    return round(n / (time.perf_counter() - started), 1)


def conf():
    return make_conf(**{'rabbit.queue_type': 'classic'})


def one_round(a, workdir):
    rates = {}
    topic = 'bench_cross_%s' % uuid.uuid4().hex[:8]
    server = bench_rpc.start_server(a.url, a.executor, topic, workdir,
                                    queue_type='classic')
    try:
        transport = rpcmq.get_transport(conf(), url=a.url)
        bench_rpc.wait_up(rpcmq.RPCClient(transport,
                                          rpcmq.Target(topic=topic)))
        transport.cleanup()
        rates['kombu client, rpcmq server'] = kombu_client(a.url, topic, a.n)
        rates['rpcmq client, rpcmq server'] = rpcmq_client(a.url, topic, a.n)
    finally:
        bench_rpc.stop_server(a.url, server, topic)
    queue = 'bench_cross_%s' % uuid.uuid4().hex[:8]
    transport = rpcmq.get_transport(conf(), url=a.url)
    # A cast declares the queue as rpcmq does (the bare server skips it).
    rpcmq.RPCClient(transport, rpcmq.Target(topic=queue)).cast({}, 'echo',
                                                               x=0)
    transport.cleanup()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    bare = multiprocessing.Process(target=kombu_server,
                                   args=(a.url, queue, ready, stop))
    bare.start()
    try:
        assert ready.wait(30), 'the bare kombu server did not start'
        rates['kombu client, kombu server'] = kombu_client(a.url, queue, a.n)
        rates['rpcmq client, kombu server'] = rpcmq_client(a.url, queue, a.n)
    finally:
        stop.set()
        bare.join(10)
        delete_entities(a.url, [queue])
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--executor', default='eventlet',
                    choices=('eventlet', 'threading'))
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--rounds', type=int, default=4)
    a = ap.parse_args()
    seen = {}
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(1, a.rounds + 1):
            for pair, rate in one_round(a, workdir).items():
                seen.setdefault(pair, []).append(rate)
                print(json.dumps({'round': number, 'pair': pair,
                                  'executor': a.executor,
                                  'calls_per_s': rate}), flush=True)
    print(json.dumps({'summary': 'call_seq', 'executor': a.executor,
                      'median_calls_per_s': {
                          pair: statistics.median(rates)
                          for pair, rates in seen.items()}}), flush=True)


if __name__ == '__main__':
    main()
