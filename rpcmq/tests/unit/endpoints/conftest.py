import pytest
from oslo_config import cfg

import rpcmq.conf
from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.testing.imageserver import ImageServer


@pytest.fixture(scope='session')
def server():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def conf(tmp_path):
    conf = cfg.ConfigOpts()
    rpcmq.conf.register_opts(conf)
    conf([], project='rpcmq', default_config_files=[],
         default_config_dirs=[])
    conf.set_override('host', 'img-1')
    conf.set_override('allow_private_networks', True, 'image')
    conf.set_override('download_backoff', 0.01, 'image')
    conf.set_override('spool_dir', str(tmp_path / 'spool'), 'image')
    conf.set_override('store', 'file')
    conf.set_override('root', str(tmp_path / 'store'), 'file_store')
    return conf


@pytest.fixture
def endpoint(conf):
    ep = ImageEndpoint(conf)
    yield ep
    ep.close()
