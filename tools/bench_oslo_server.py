"""An oslo.messaging RPC server for rpcmq's benchmarks.

Run with a Python that has oslo.messaging (not rpcmq's). Serves
``--topic`` as server ``--server`` on the ``openstack`` exchange with
oslo.messaging's defaults, until SIGTERM. Its endpoint answers what
rpcmq's ``diag`` endpoint answers in benchmarks: ``ping``, ``echo``,
``bump`` (a cast counter), ``count`` and ``bumps`` (the count, and when
the first and the latest bump ran), so ``bench_backlog.py`` reads both
servers the same way.

Usage: python bench_oslo_server.py --topic T [--server bench]
       [--executor eventlet|threading] [--url rabbit://...]
"""

import argparse
import signal
import threading
import time


class BenchEndpoint:

    def __init__(self):
        self._count = 0
        self._first = self._last = None
        self._lock = threading.Lock()

    def ping(self, ctxt):
        return {'time': time.time()}

    def echo(self, ctxt, x=None):
        return x

    def bump(self, ctxt, n=1):
        now = time.time()
        with self._lock:
            self._count += int(n)
            if self._first is None:
                self._first = now
            self._last = now

    def count(self, ctxt):
        return self._count

    def bumps(self, ctxt):
        with self._lock:
            return {'count': self._count, 'first': self._first,
                    'last': self._last}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--topic', required=True)
    ap.add_argument('--server', default='bench')
    ap.add_argument('--executor', default='eventlet',
                    choices=['eventlet', 'threading'])
    a = ap.parse_args()
    if a.executor == 'eventlet':
        import eventlet
        eventlet.monkey_patch()
    import oslo_messaging as om
    from oslo_config import cfg
    conf = cfg.CONF
    conf([])
    transport = om.get_rpc_transport(conf, url=a.url)
    server = om.get_rpc_server(
        transport, om.Target(topic=a.topic, server=a.server),
        [BenchEndpoint()], executor=a.executor,
        access_policy=om.rpc.dispatcher.DefaultRPCAccessPolicy)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    while not stop.wait(0.1):
        pass
    server.stop()
    server.wait()
    transport.cleanup()


if __name__ == '__main__':
    main()
