"""An oslo.messaging RPC server for rpcmq's benchmarks.

Run with a Python that has oslo.messaging (not rpcmq's). Serves
``--topic`` as server ``--server`` on the ``openstack`` exchange with
oslo.messaging's defaults, until SIGTERM. Its endpoint is rpcmq's own
``diag`` endpoint (unsafe methods on), imported from this checkout (it
needs nothing outside the standard library), so ``bench_backlog.py``
runs the same endpoint code on both servers and reads them the same way.

Usage: python bench_oslo_server.py --topic T [--server bench]
       [--executor eventlet|threading] [--url rabbit://...]
"""

import argparse
import os
import signal
import sys
import threading


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
    # After eventlet's patching: the endpoint's lock must be green.
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from rpcmq.endpoints.diag import DiagEndpoint
    conf = cfg.CONF
    conf([])
    transport = om.get_rpc_transport(conf, url=a.url)
    endpoint = DiagEndpoint(unsafe=True)
    # oslo.messaging accepts only its own Target here; the same fields.
    endpoint.target = om.Target(namespace=endpoint.target.namespace,
                                version=endpoint.target.version)
    server = om.get_rpc_server(
        transport, om.Target(topic=a.topic, server=a.server),
        [endpoint], executor=a.executor,
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
