"""Fixtures shared by the unit tests of the image path (fetch, endpoints)."""

import pytest

from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.server import make_conf


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
