"""Options of the RPC server and its executors."""

import socket

from oslo_config import cfg

DEFAULT_OPTS = [
    cfg.StrOpt('host', default=socket.gethostname(),
               sample_default='<hostname>',
               help='Name of this server: the routing key topic.<host> '
                    'reaches it alone.'),
    cfg.StrOpt('executor', default='eventlet',
               help='How a server runs endpoint methods: eventlet (green '
                    'threads) or threading (a pool of OS threads). The '
                    'daemons monkey-patch eventlet at start; with '
                    'threading they re-execute themselves without it.'),
    cfg.IntOpt('executor_thread_pool_size', default=64, min=1,
               help='Endpoint methods a server runs at once.'),
    cfg.ListOpt('endpoints', default=['image'],
                help='Endpoints rpcmq-server hosts, by their entry point '
                     'name in the rpcmq.endpoints group.'),
    cfg.StrOpt('topic', default='image',
               help='Topic rpcmq-server listens on.'),
    cfg.IntOpt('graceful_shutdown_timeout', default=60, min=0,
               help='Seconds a daemon waits on SIGTERM for work in flight '
                    'before it exits; unfinished casts are requeued.'),
    cfg.StrOpt('log_file',
               help='Write daemon logs to this file instead of stderr.'),
    cfg.StrOpt('log_level', default='INFO',
               choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'],
               help='Lowest level of log records a daemon writes.'),
]

DIAG_OPTS = [
    cfg.BoolOpt('unsafe_methods', default=False,
                help='Let callers of the diag endpoint run sleep (holds a '
                     'worker up to 300 s), fail, bump and count. Off, only '
                     'ping and echo answer; turn it on for tests and '
                     'benchmarks only.'),
]


def list_opts():
    return [('DEFAULT', DEFAULT_OPTS), ('diag', DIAG_OPTS)]
