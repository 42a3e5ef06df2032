"""The whole batch pipeline in one process: image servers + conductor.

    with Pipeline(workdir) as p:
        batch_id = p.api.submit([{'url': p.images.url('/img/a.jpg')}])

Used by ``rpcmq demo`` and by tests. Each image server gets its own host
name and spool directory, as separate machines would; all share the
transport (``memory://`` by default), the file store and the image server.
Image servers announce themselves (``server.alive``) every ``[status]
announce_interval`` seconds, as rpcmq-server daemons do.
"""

import os
import threading

from rpcmq.conductor.api import ConductorAPI
from rpcmq.conductor.service import ConductorService
from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.observe.presence import Announcer
from rpcmq.rpc.server import RPCServer
from rpcmq.target import Target
from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport

__all__ = ['Pipeline']


class _ImageServer(RPCServer):
    """An RPC server that tells when it has stopped taking messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Set once the server's consumers are cancelled: nothing sent to
        #: it from then on reaches it. The calls it took still run.
        self.stopped_taking = threading.Event()

    def _drain(self):
        # The listener's on_drain: runs once its consumers are cancelled,
        # before the calls in flight are waited for.
        self.stopped_taking.set()
        super()._drain()


class Pipeline:

    def __init__(self, workdir, servers=2, url='memory://', store_dir=None,
                 image_topic='image', **overrides):
        self.workdir = workdir
        self.url = url
        self.store_dir = os.path.abspath(
            store_dir or os.path.join(workdir, 'store'))
        self.image_topic = image_topic
        self.hosts = ['demo-%d' % n for n in range(1, servers + 1)]
        self.overrides = overrides
        self.conf = self.make_conf('conductor')
        self.images = ImageServer()
        self.transport = None
        self.conductor = None
        self.servers = {}
        self.announcers = {}  # host -> Announcer of its image server
        self.api = None

    def make_conf(self, host):
        values = {
            'transport_url': self.url, 'host': host, 'store': 'file',
            'executor_thread_pool_size': 16,
            'file_store.root': self.store_dir,
            'image.spool_dir': os.path.join(self.workdir, 'spool', host),
            'image.allow_private_networks': True,
            'image.download_retries': 1,
            'conductor.connection': 'sqlite:///%s' % os.path.join(
                self.workdir, 'conductor.sqlite'),
            'conductor.image_topic': self.image_topic,
            'conductor.item_retries': 1,
            'conductor.retry_backoff': 0.2,
        }
        values.update(self.overrides)
        return make_conf(**values)

    def start(self):
        self.images.start()
        self.transport = get_transport(self.conf)
        for host in self.hosts:
            self.start_server(host)
        self.conductor = ConductorService(self.conf, self.transport)
        self.conductor.start()
        self.api = ConductorAPI(self.transport)
        return self

    def make_endpoint(self, host):
        """The endpoint image server ``host`` serves (tests override it)."""
        return ImageEndpoint(self.make_conf(host))

    def start_server(self, host):
        server = _ImageServer(
            self.transport, Target(topic=self.image_topic, server=host),
            [self.make_endpoint(host)])
        server.start()
        self.servers[host] = server
        announcer = self.announcers[host] = Announcer(
            self.transport, server,
            interval=self.conf.status.announce_interval)
        announcer.start()
        return server

    def stop_server(self, host, when_stopped=None, timeout=30):
        """Stop image server ``host`` and wait until it is gone.

        It stops taking messages, the calls it took finish (their replies
        are sent), then its connection closes. ``when_stopped()``, if given,
        runs once it takes no more messages and before the calls it took
        are waited for: say, to let calls a test holds go on, knowing that
        what their callers send next cannot reach this server.
        """
        server = self.servers.pop(host)
        server.stop()
        self.announcers.pop(host).stop()
        if when_stopped is not None:
            if not server.stopped_taking.wait(timeout):
                raise RuntimeError('image server %s still takes messages '
                                   'after %ss' % (host, timeout))
            when_stopped()
        if not server.wait(timeout):
            raise RuntimeError('image server %s still running after %ss'
                               % (host, timeout))

    def stop(self):
        # The conductor first, while the image servers still answer the
        # calls it has in flight: stopped first, they would leave those
        # calls waiting out their timeouts (Ctrl-C in rpcmq demo hung).
        if self.conductor is not None:
            self.conductor.stop()
            self.conductor.wait(30)
        servers = list(self.servers.values())
        for server in servers:
            server.stop()
        for announcer in self.announcers.values():
            announcer.stop()  # server.stopped, while the transport is up
        self.announcers.clear()
        for server in servers:
            server.wait(30)
        if self.transport is not None:
            self.transport.cleanup()
        self.images.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
