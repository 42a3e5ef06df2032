"""The dashboard application and the server that runs it.

``Dashboard(conf, transport)`` binds ``[dashboard] host:port`` at once (a
port in use is a ConfigError that says which), then ``serve()`` runs it
in this thread (the daemon: SIGINT / SIGTERM stop it) or ``start()`` on a
thread of its own (``rpcmq demo --dashboard``, tests) until ``stop()``.
It is an asyncio application (Starlette on uvicorn); the rpcmq calls it
makes block, so they run on uvicorn's thread pool, never on the loop.
"""

import datetime
import logging
import os
import socket
import threading
import time
from urllib.parse import urlencode

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from rpcmq.dashboard import views
from rpcmq.dashboard.auth import Guard
from rpcmq.dashboard.backend import Backend
from rpcmq.exceptions import (
    ConfigError,
    MessagingTimeout,
    RpcmqError,
    TransportError,
)

__all__ = ['Dashboard', 'create_app']

LOG = logging.getLogger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))
#: Sent with every answer. No inline script may run, whatever a page
#: shows; images may come from a store's signed URLs.
SECURITY_HEADERS = (
    ('content-security-policy', "default-src 'self'; img-src 'self' data: "
     "http: https:; script-src 'self'; style-src 'self'; object-src 'none'; "
     "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ('x-content-type-options', 'nosniff'),
    ('referrer-policy', 'same-origin'),
    ('x-frame-options', 'DENY'),
)
#: Paths anyone may reach (the sign-in form needs its style sheet).
OPEN_PATHS = ('/login', '/healthz')


def _when(epoch):
    """An epoch as a UTC date a person reads (the page's script shows it
    in local time)."""
    if not epoch:
        return ''
    return datetime.datetime.fromtimestamp(
        epoch, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def _iso(epoch):
    return datetime.datetime.fromtimestamp(
        epoch, datetime.timezone.utc).isoformat() if epoch else ''


class _Gate:
    """ASGI middleware: sign-in where a token is set, security headers
    everywhere."""

    def __init__(self, app, guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        request = Request(scope)
        path = scope['path']
        if not (path in OPEN_PATHS or path.startswith('/static/') or
                self.guard.signed_in(request)):
            if request.method == 'GET' and 'text/html' in \
                    request.headers.get('accept', ''):
                wanted = path + ('?' + scope['query_string'].decode(
                    'latin-1') if scope.get('query_string') else '')
                response = RedirectResponse(
                    '/login?' + urlencode({'next': wanted}), 303)
            else:
                response = PlainTextResponse(
                    'sign in: POST /login, or send the header '
                    '"Authorization: Bearer TOKEN"\n', 401)
            return await response(scope, receive, self._headers(send))
        await self.app(scope, receive, self._headers(send))

    @staticmethod
    def _headers(send):
        async def sending(message):
            if message['type'] == 'http.response.start':
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
            await send(message)
        return sending


def _unavailable(request, exc):
    if isinstance(exc, MessagingTimeout):
        message = ('the conductor did not answer within %ss: is '
                   'rpcmq-conductor running on topic %r? (%s)' % (
                       request.app.state.dash.conf.rpc_response_timeout,
                       request.app.state.dash.conf.conductor.topic, exc))
    else:
        message = str(exc)
    return views.error_page(request, 503, 'Not available now', message)


def _failed(request, exc):
    return views.error_page(request, 502, 'The call failed',
                            '%s: %s' % (type(exc).__name__, exc))


def create_app(dash):
    """The Starlette app of ``dash`` (a Dashboard: backend, guard,
    templates, page_size, conf)."""
    async def healthz(request):
        problem = dash.backend.live.problem()
        return PlainTextResponse('ok\n' if problem is None else
                                 problem + '\n', 200 if problem is None
                                 else 503)

    routes = [
        Route('/', views.batches, name='batches'),
        Route('/batches/{batch_id}', views.batch, name='batch'),
        Route('/batches/{batch_id}/events', views.batch_events),
        Route('/batches/{batch_id}/items/{idx:int}/thumb', views.thumbnail,
              name='thumb'),
        Route('/batches/{batch_id}/cancel', views.cancel, methods=['POST'],
              name='cancel'),
        Route('/batches/{batch_id}/retry', views.retry, methods=['POST'],
              name='retry'),
        Route('/servers', views.servers, name='servers'),
        Route('/dead/{topic}', views.dead, name='dead'),
        Route('/login', views.login, methods=['GET', 'POST'], name='login'),
        Route('/logout', views.logout, methods=['POST'], name='logout'),
        Route('/healthz', healthz),
        Mount('/static', StaticFiles(directory=os.path.join(HERE, 'static')),
              name='static'),
    ]
    handlers = dict(views.ERRORS)
    handlers.update({MessagingTimeout: _unavailable,
                     TransportError: _unavailable, RpcmqError: _failed})
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.dash = dash
    # Outside Starlette's own error middleware: an unexpected 500 gets
    # the security headers too.
    return _Gate(app, dash.guard)


def _templates():
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(HERE, 'templates')),
        autoescape=True)
    env.filters['when'] = _when
    env.filters['iso'] = _iso
    return Jinja2Templates(env=env)


def bind(host, port):
    """A listening socket on ``host:port``; ConfigError if it cannot be."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(reason='the dashboard cannot listen on %s:%d: %s '
                                 '(choose another port: [dashboard] port, '
                                 'rpcmq-dashboard --port, or rpcmq demo '
                                 '--dashboard-port)' % (
                                     host, port, exc.strerror or exc)) \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Dashboard:

    def __init__(self, conf, transport, store=None, host=None, port=None):
        opts = conf.dashboard
        self.conf = conf
        self.backend = Backend(conf, transport, store=store)
        self.guard = Guard(opts.auth_token)
        self.templates = _templates()
        self.page_size = opts.page_size
        self.app = create_app(self)
        self._sock = bind(host or opts.host, opts.port if port is None
                          else port)
        host, port = self._sock.getsockname()[:2]
        self.url = 'http://%s:%d/' % ('[%s]' % host if ':' in host else host,
                                      port)
        self._server = uvicorn.Server(uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan='off',
            timeout_graceful_shutdown=2))
        self._thread = None

    def serve(self):
        """Run until SIGINT / SIGTERM (main thread) or ``stop()``."""
        connected = self.backend.start()
        if not connected:
            LOG.warning('rpcmq-dashboard: not connected to the broker yet; '
                        'live progress and servers appear once it is')
        LOG.info('rpcmq-dashboard started on %s', self.url)
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self.backend.stop()
            self._sock.close()

    def start(self, timeout=30.0):
        """Serve on a thread of its own; return once it answers."""
        self._thread = threading.Thread(target=self.serve,
                                        name='rpcmq-dashboard', daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and \
                time.monotonic() < deadline:
            self._thread.join(0.02)  # uvicorn has no started event
        if not self._server.started:
            raise RpcmqError('the dashboard did not start within %ss'
                             % timeout)
        return self

    def stop(self, timeout=10.0):
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
