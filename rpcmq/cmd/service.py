"""What every rpcmq daemon does: config, logging, signals, clear errors."""

import logging
import signal
import sys
import threading

from oslo_config import cfg

import rpcmq
from rpcmq import conf as rpcmq_conf
from rpcmq.cmd import patching
from rpcmq.conf import status as status_opts
from rpcmq.exceptions import RpcmqError
from rpcmq.observe import logs
from rpcmq.observe.http import start_status_server

__all__ = ['prepare', 'prepare_daemon', 'run_until_signalled', 'fatal']

LOG = logging.getLogger(__name__)
LOG_FORMAT = '%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s'
#: What ``--help`` says each program is.
DESCRIPTIONS = {
    'rpcmq-server': 'Host the endpoints named in the config ([DEFAULT] '
                    'endpoints) on its topic.',
    'rpcmq-conductor': 'Run batches of image transfers durably and report '
                       'their progress.',
    'rpcmq-bridge-redis': 'Take batch download tasks from a Redis list and '
                          'report results back to Redis.',
    'rpcmq-bridge-mqtt': 'Take image sync messages from MQTT topics and '
                         'report results back over MQTT.',
    'rpcmq-dashboard': 'Serve a web UI of the batches and the servers '
                       '([dashboard] host and port).',
}


def fatal(message, code=1):
    """One clear line on stderr and a non-zero exit; no traceback."""
    sys.stderr.write('%s: error: %s\n' % (
        sys.argv[0].rsplit('/', 1)[-1], message))
    raise SystemExit(code)


def prepare(argv, prog, cli_opts=()):
    """Parse ``--config-file``s (and ``cli_opts``) and set up logging;
    return the ConfigOpts."""
    conf = cfg.ConfigOpts()
    # --status-port: daemons sharing one config file need a port each.
    conf.register_cli_opts(status_opts.STATUS_OPTS[:1], group='status')
    rpcmq_conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    try:
        rpcmq_conf.load(conf, argv, prog=prog, version=rpcmq.__version__,
                        description=DESCRIPTIONS.get(prog))
    except RpcmqError as exc:
        fatal(exc, code=2)
    handler = (logging.FileHandler(conf.log_file) if conf.log_file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logs.JsonFormatter() if conf.log_format == 'json'
                         else logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(conf.log_level)
    # kombu says 'Connected to rpcmqamqp://...' (its name for rpcmq's
    # transport class) where rpcmq says which broker it reached.
    logging.getLogger('kombu.mixins').setLevel(logging.WARNING)
    return conf


def prepare_daemon(argv, prog, cli_opts=()):
    """``prepare`` for rpcmq-server / rpcmq-conductor.

    Started from the command line (``argv`` None), a daemon configured
    with ``executor = threading`` re-executes itself without eventlet here.
    """
    conf = prepare(sys.argv[1:] if argv is None else argv, prog, cli_opts)
    if argv is None:
        patching.os_threads_if_configured(conf)
    return conf


def reload_log_level(conf, name):
    """SIGHUP: read the config files again; apply ``log_level``."""
    try:
        if not conf.reload_config_files():
            raise ValueError('see the error above')
        level = conf.log_level
    except (cfg.Error, ValueError) as exc:
        LOG.error('%s: SIGHUP: config files not reloaded, keeping the old '
                  'settings: %s', name, exc)
        return
    logging.getLogger().setLevel(level)
    LOG.warning('%s: SIGHUP: config files read again; log_level is %s '
                '(other options take effect at the next restart)', name,
                level)


def run_until_signalled(service, conf, name):
    """Start ``service``, run until SIGTERM/SIGINT, stop it gracefully.

    ``service`` has start(), stop(), wait(timeout) and health() (None
    when healthy, else why: served on ``[status] port``, with metrics,
    while the daemon runs). Exits 0 when it
    stopped within ``graceful_shutdown_timeout`` (plus a little for
    closing connections), 1 otherwise. SIGHUP reads the config files
    again and applies ``log_level``; other options need a restart.
    """
    stop, hangup = threading.Event(), threading.Event()

    def on_signal(signum, frame):
        LOG.info('%s: signal %d, stopping', name, signum)
        stop.set()

    def on_hangup(signum, frame):
        hangup.set()  # handled by the loop below, not in the handler

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        status = start_status_server(conf, service.health, name)
        connected = service.start()
    except RpcmqError as exc:
        fatal(exc)
    if connected is False:
        LOG.warning('%s: not connected to the broker yet; it keeps trying '
                    'and serves once connected', name)
    else:
        LOG.info('%s started', name)
    if status is not None:
        status.ready = True
    while not stop.wait(1.0):
        if hangup.is_set():
            hangup.clear()
            reload_log_level(conf, name)
    if status is not None:
        status.stopping = True
    service.stop()
    clean = service.wait(conf.graceful_shutdown_timeout + 5)
    LOG.info('%s stopped%s', name, '' if clean else ' (work abandoned)')
    if status is not None:
        status.stop()
    return 0 if clean else 1
