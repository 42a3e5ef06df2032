"""The daemons' status port: ``/metrics``, ``/healthz``, ``/readyz``.

``[status] port`` (0: off) and ``host`` (127.0.0.1 by default: metrics
name topics and methods; expose them on purpose). ``/metrics`` is the
Prometheus text format of ``prometheus_client``'s default registry.
``/healthz`` answers 200 ``ok`` while the daemon consumes from its queues
and is connected, and 503 with the reason otherwise (``consumer stopped``,
``broker unreachable: ...``, ``authentication refused: ...``).
``/readyz`` is ``/healthz`` that also answers 503 before the daemon has
started and once it is shutting down, so a load balancer or an
orchestrator stops sending work first.

The server runs on a thread of its own (a green thread under eventlet);
a scrape never blocks message handling.
"""

import http.server
import logging
import threading

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from rpcmq.exceptions import ConfigError

__all__ = ['StatusServer', 'start_status_server']

LOG = logging.getLogger(__name__)


class StatusServer:
    """Serve the status endpoints of ``health``: a callable returning
    ``None`` when healthy, else the reason (text)."""

    def __init__(self, host, port, health, name):
        self.name = name
        self.health = health
        self.ready = False      # set by the daemon once started
        self.stopping = False   # set by the daemon when it shuts down
        handler = type('Handler', (_Handler,), {'status': self})
        try:
            self._httpd = http.server.ThreadingHTTPServer((host, port),
                                                          handler)
        except OSError as exc:
            raise ConfigError(reason='[status] cannot listen on %s:%d: %s '
                                     '(choose another [status] port, or 0 '
                                     'to turn it off)' % (host, port,
                                                          exc.strerror or
                                                          exc)) from None
        self._httpd.daemon_threads = True
        self.address = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name='rpcmq-status', daemon=True)

    def start(self):
        self._thread.start()
        LOG.info('%s: status on http://%s:%d/ (metrics, healthz, readyz)',
                 self.name, *self.address)
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def problem(self, readiness):
        """None when healthy (and ready, for ``readiness``), else why."""
        if readiness and self.stopping:
            return 'shutting down'
        if readiness and not self.ready:
            return 'starting'
        try:
            return self.health()
        except Exception as exc:  # a health check must answer anyway
            LOG.exception('%s: health check failed', self.name)
            return 'health check failed: %s: %s' % (type(exc).__name__, exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    status = None  # the StatusServer, set per server

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        if path == '/metrics':
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path in ('/healthz', '/readyz'):
            problem = self.status.problem(readiness=path == '/readyz')
            if problem is None:
                self._answer(200, b'ok\n')
            else:
                self._answer(503, ('%s\n' % problem).encode())
        else:
            self._answer(404, b'not found: try /metrics, /healthz or '
                              b'/readyz\n')

    def _answer(self, code, body, ctype='text/plain; charset=utf-8'):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # scrapes are not news
        LOG.debug('%s: status %s', self.status.name, format % args)


def start_status_server(conf, health, name):
    """The started StatusServer of ``[status]``, or None when the port is
    0."""
    if not conf.status.port:
        return None
    return StatusServer(conf.status.host, conf.status.port, health,
                        name).start()
