import pytest
from oslo_config import cfg

import rpcmq.conf
from rpcmq.fetch import Fetcher
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
    conf.set_override('allow_private_networks', True, 'image')
    conf.set_override('download_backoff', 0.01, 'image')
    conf.set_override('spool_dir', str(tmp_path / 'spool'), 'image')
    return conf


@pytest.fixture
def spool(conf):
    return conf.image.spool_dir


@pytest.fixture
def make_fetcher(conf):
    """make_fetcher(**image_overrides) -> a Fetcher on those options."""
    made = []

    def make(**overrides):
        for name, value in overrides.items():
            conf.set_override(name, value, 'image')
        made.append(Fetcher.from_conf(conf))
        return made[-1]

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def fetcher(make_fetcher):
    return make_fetcher()
