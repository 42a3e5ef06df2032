"""Run endpoints in this process and call them, no broker needed.

    with InProcessServer([MyEndpoint()], topic='things') as srv:
        assert srv.client.call({}, 'double', x=2) == 4

Each instance uses its own topic and server name on ``memory://`` (or the
URL given), so tests can run several side by side.
"""

import uuid

from oslo_config import cfg

from rpcmq import conf as rpcmq_conf
from rpcmq.rpc.client import RPCClient
from rpcmq.rpc.server import get_rpc_server
from rpcmq.target import Target
from rpcmq.transport import get_transport

__all__ = ['InProcessServer', 'make_conf']


def make_conf(**overrides):
    """A fresh ConfigOpts with every rpcmq option registered."""
    conf = cfg.ConfigOpts()
    rpcmq_conf.register_opts(conf)
    conf([], project='rpcmq', default_config_files=[],
         default_config_dirs=[])
    for name, value in overrides.items():
        group, _, opt = name.rpartition('.')
        conf.set_override(opt, value, group=group or None)
    return conf


class InProcessServer:
    """An RPC server plus a client for it, on one transport."""

    def __init__(self, endpoints, topic=None, server='test-server',
                 url='memory://', conf=None, executor='threading',
                 timeout=10):
        self.conf = conf or make_conf()
        self.topic = topic or 'test_%s' % uuid.uuid4().hex[:12]
        self.transport = get_transport(self.conf, url=url)
        self.target = Target(topic=self.topic, server=server)
        self.server = get_rpc_server(self.transport, self.target, endpoints,
                                     executor=executor)
        self.client = RPCClient(self.transport, Target(topic=self.topic),
                                timeout=timeout)

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
