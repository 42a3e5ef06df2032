"""Options of the daemons' status port (metrics and health), presence
announcements and logs."""

from oslo_config import cfg

STATUS_OPTS = [
    cfg.PortOpt('port', default=0,
                help='Port where a daemon serves GET /metrics (Prometheus '
                     'text format), /healthz and /readyz over HTTP; 0 '
                     'turns it off. Each daemon on a machine needs its '
                     'own: --status-port on the command line overrides '
                     'this.'),
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='Address the status port listens on. Metrics '
                            'name topics and methods: listen beyond '
                            'localhost only where scrapers need it.'),
    cfg.FloatOpt('announce_interval', default=10.0, min=0,
                 help='Seconds between the server.alive notifications an '
                      'rpcmq-server publishes (topic, host, executor load, '
                      'health), so dashboards list the live servers '
                      'without the broker\'s management API; it sends '
                      'server.stopped when it stops. 0 turns it off.'),
]

LOG_OPTS = [
    cfg.StrOpt('log_format', default='text', choices=['text', 'json'],
               help='Daemon log lines as text, or as JSON objects one per '
                    'line (timestamp, level, logger, message and, where '
                    'there is one, batch_id, item, method, '
                    'correlation_id).'),
]


def list_opts():
    return [('DEFAULT', LOG_OPTS), ('status', STATUS_OPTS)]
