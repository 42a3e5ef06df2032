"""Fixtures shared by the unit tests of the image path (fetch, endpoints,
storage)."""

import pytest

from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.ossserver import OSSServer
from rpcmq.testing.server import make_conf

#: Credentials, bucket and region of ``oss_server``.
KEY_ID = 'rpcmq-unit-key'
SECRET = 'Unit-S3cret-Never-Logged-7f3a'
BUCKET = 'rpcmq-unit'
REGION = 'cn-unittest'


@pytest.fixture(scope='session')
def _image_server():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def server(_image_server):
    """The local image server (generated images and failure routes), with
    its request counts at zero."""
    _image_server.reset_counts()
    return _image_server


@pytest.fixture
def image_conf(tmp_path):
    """Config for downloading from the local image server into tmp_path."""
    return make_conf(**{'image.allow_private_networks': True,
                        'image.download_backoff': 0.01,
                        'image.spool_dir': str(tmp_path / 'spool')})


@pytest.fixture
def oss_server():
    """A local OSS-compatible server holding ``BUCKET`` (V4 region
    ``REGION``, credentials ``KEY_ID`` / ``SECRET``)."""
    with OSSServer(credentials={KEY_ID: SECRET}, buckets=[BUCKET],
                   region=REGION) as server:
        yield server
