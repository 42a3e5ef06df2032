"""The oslo.messaging anchor's client loop, against any server of a topic.

Run with a Python that has oslo.messaging (not rpcmq's): ``bench_rpc.py
--oslo-client PYTHON`` starts an ``rpcmq-server`` with ``oslo_compat`` and
runs this against it, so rpcmq serving oslo.messaging callers is measured
with the very client of ``../shared/bench/oslo_rpc_bench.py``. One JSON
line per scenario (call_seq, call_conc, cast), as that anchor prints.

``--casts-only N`` publishes N ``bump`` casts and exits, without waiting
for a server: the backlog of ``bench_backlog.py``.

Usage: python bench_oslo_client.py --topic T [--exchange openstack]
       [--url ...] [--n 2000] [--conc 16] [--label rpcmq-oslo-compat]
       [--casts-only N]
"""

import argparse
import json
import threading
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--topic', required=True)
    ap.add_argument('--exchange', default='openstack')
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--conc', type=int, default=16)
    ap.add_argument('--label', default='rpcmq-oslo-compat')
    ap.add_argument('--executor', default='',
                    help='the server\'s executor, only echoed in the output')
    ap.add_argument('--casts-only', type=int, metavar='N',
                    help='publish N bump casts and exit')
    a = ap.parse_args()
    import oslo_messaging as om
    from oslo_config import cfg
    conf = cfg.CONF
    conf([])
    om.set_transport_defaults(control_exchange=a.exchange)
    transport = om.get_rpc_transport(conf, url=a.url)
    client = om.get_rpc_client(transport, om.Target(topic=a.topic),
                               timeout=30)

    if a.casts_only:
        for _ in range(a.casts_only):
            client.cast({}, 'bump')
        transport.cleanup()
        return

    def emit(**fields):
        print(json.dumps(dict({'sys': a.label, 'executor': a.executor},
                              **fields)), flush=True)

    deadline = time.monotonic() + 30
    while True:  # the server is up once it answers
        try:
            client.prepare(timeout=1).call({}, 'ping')
            break
        except om.MessagingTimeout:
            if time.monotonic() > deadline:
                raise
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
    emit(scenario='call_seq', n=a.n, calls_per_s=round(a.n / el, 1),
         p50_ms=round(lat[len(lat) // 2] * 1e3, 3),
         p99_ms=round(lat[int(len(lat) * 0.99)] * 1e3, 3))

    per, errors = a.n // a.conc, []

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
    emit(scenario='call_conc', conc=a.conc, n=per * a.conc,
         calls_per_s=round(per * a.conc / el, 1), errors=len(errors))

    base = client.call({}, 'count')
    t0 = time.perf_counter()
    for _ in range(a.n):
        client.cast({}, 'bump')
    while client.call({}, 'count') < base + a.n:
        time.sleep(0.005)
    el = time.perf_counter() - t0
    emit(scenario='cast', n=a.n, casts_per_s=round(a.n / el, 1))
    transport.cleanup()


if __name__ == '__main__':
    main()
