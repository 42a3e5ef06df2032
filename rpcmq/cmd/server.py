"""rpcmq-server: host the endpoints named in config on a topic."""

from rpcmq.cmd import patching

patching.monkey_patch()  # first thing; see os_threads_if_configured

import logging  # noqa: E402
import sys  # noqa: E402

from stevedore import named  # noqa: E402

from rpcmq.cmd import service  # noqa: E402
from rpcmq.exceptions import RpcmqError  # noqa: E402

LOG = logging.getLogger('rpcmq.server')

ENDPOINTS_NAMESPACE = 'rpcmq.endpoints'


def load_endpoints(conf):
    """Instantiate the endpoints listed in ``conf.endpoints``."""
    missing = []
    mgr = named.NamedExtensionManager(
        ENDPOINTS_NAMESPACE, names=conf.endpoints, invoke_on_load=True,
        invoke_args=(conf,), name_order=True,
        on_missing_entrypoints_callback=missing.extend,
        on_load_failure_callback=_load_failed)
    if missing:
        known = sorted(ep.name for ep in mgr.list_entry_points())
        service.fatal('unknown endpoints %s; installed: %s'
                      % (', '.join(sorted(missing)), ', '.join(known)))
    return [ext.obj for ext in mgr]


def _load_failed(manager, entrypoint, exc):
    service.fatal('endpoint %s could not be loaded: %s'
                  % (entrypoint.name, exc))


class Announced:
    """The RPC server with its presence heartbeats, as
    ``service.run_until_signalled`` runs it: heartbeats start once the
    server was started, and ``server.stopped`` goes out once it takes no
    more messages (the work it took may still be finishing)."""

    def __init__(self, server, announcer):
        self.server = server
        self.announcer = announcer

    def start(self):
        connected = self.server.start()
        self.announcer.start()
        return connected

    def stop(self):
        self.server.stop()
        if not self.announcer.stop():
            LOG.warning('presence heartbeats of %s did not stop in time; '
                        'server.stopped may not have been sent',
                        self.announcer.host)

    def wait(self, timeout=None):
        return self.server.wait(timeout)

    def health(self):
        return self.server.health()


def main(argv=None):
    from rpcmq.observe.presence import Announcer
    from rpcmq.rpc.server import get_rpc_server
    from rpcmq.target import Target
    from rpcmq.transport import get_transport

    conf = service.prepare_daemon(argv, 'rpcmq-server')
    try:
        transport = get_transport(conf)
        endpoints = load_endpoints(conf)
        target = Target(topic=conf.topic, server=conf.host)
        server = get_rpc_server(transport, target, endpoints,
                                executor=conf.executor)
        announcer = Announcer(transport, server, 'rpcmq-server',
                              conf.status.announce_interval)
    except RpcmqError as exc:
        service.fatal(exc)
    LOG.info('serving %s on %s as %s with %s', ', '.join(conf.endpoints),
             conf.topic, conf.host, conf.executor)
    code = service.run_until_signalled(Announced(server, announcer), conf,
                                       'rpcmq-server')
    transport.cleanup()
    return code


if __name__ == '__main__':
    sys.exit(main())
