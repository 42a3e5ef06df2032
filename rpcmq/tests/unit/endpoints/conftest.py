import pytest

from rpcmq.endpoints.image import ImageEndpoint


@pytest.fixture
def conf(image_conf, tmp_path):
    image_conf.set_override('host', 'img-1')
    image_conf.set_override('store', 'file')
    image_conf.set_override('root', str(tmp_path / 'store'), 'file_store')
    return image_conf


@pytest.fixture
def endpoint(conf):
    ep = ImageEndpoint(conf)
    yield ep
    ep.close()
