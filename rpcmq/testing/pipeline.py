"""The whole batch pipeline in one process: image servers + conductor.

    with Pipeline(workdir) as p:
        batch_id = p.api.submit([{'url': p.images.url('/img/a.jpg')}])

Used by ``rpcmq demo`` and by tests. Each image server gets its own host
name and spool directory, as separate machines would; all share the
transport (``memory://`` by default), the file store and the image server.
"""

import os

from rpcmq.conductor.api import ConductorAPI
from rpcmq.conductor.service import ConductorService
from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.rpc.server import get_rpc_server
from rpcmq.target import Target
from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport

__all__ = ['Pipeline']


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

    def start_server(self, host):
        server = get_rpc_server(
            self.transport, Target(topic=self.image_topic, server=host),
            [ImageEndpoint(self.make_conf(host))])
        server.start()
        self.servers[host] = server
        return server

    def stop_server(self, host):
        server = self.servers.pop(host)
        server.stop()
        server.wait(30)

    def stop(self):
        services = list(self.servers.values())
        if self.conductor is not None:
            services.append(self.conductor)
        for service in services:
            service.stop()
        for service in services:
            service.wait(30)
        if self.transport is not None:
            self.transport.cleanup()
        self.images.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
