"""rpcmq-dashboard: the web UI for batches and servers."""

import logging
import signal
import sys

from oslo_config import cfg

from rpcmq.cmd import service
from rpcmq.exceptions import RpcmqError

LOG = logging.getLogger('rpcmq.dashboard')

CLI_OPTS = [
    cfg.PortOpt('port', help='Port to serve on; overrides [dashboard] '
                             'port.'),
]


def main(argv=None):
    conf = service.prepare(sys.argv[1:] if argv is None else argv,
                           'rpcmq-dashboard', CLI_OPTS)
    from rpcmq.dashboard.app import Dashboard
    from rpcmq.transport import get_transport
    try:
        transport = get_transport(conf)
        dashboard = Dashboard(conf, transport, port=conf.port)
    except RpcmqError as exc:
        service.fatal(exc)
    if not conf.dashboard.auth_token:
        LOG.warning('rpcmq-dashboard: [dashboard] auth_token is not set: '
                    'pages are open to whoever reaches %s and cancel and '
                    'retry are off', dashboard.url)
    # uvicorn stops on SIGINT / SIGTERM, then raises the signal again
    # under the handlers it found: make that a clean exit 0, as the other
    # daemons do. SIGHUP applies log_level from the config files again.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: None)
    signal.signal(signal.SIGHUP, lambda signum, frame: (
        service.reload_log_level(conf, 'rpcmq-dashboard')))
    try:
        dashboard.serve()
    except RpcmqError as exc:
        service.fatal(exc)
    finally:
        transport.cleanup()
    LOG.info('rpcmq-dashboard stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
