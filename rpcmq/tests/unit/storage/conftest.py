"""Fixtures of the storage tests: configs, a local OSS server, files."""

import os
import random
import socket

import pytest
from oslo_config import cfg

import rpcmq.conf
from rpcmq.tests.unit.conftest import (  # noqa: F401 (the storage tests')
    BUCKET,
    KEY_ID,
    REGION,
    SECRET,
)


def make_conf(store='file', file_store=None, oss=None):
    conf = cfg.ConfigOpts()
    rpcmq.conf.register_opts(conf)
    conf([], project='rpcmq', default_config_files=[])
    conf.set_override('store', store)
    for group, values in (('file_store', file_store), ('oss', oss)):
        for name, value in (values or {}).items():
            conf.set_override(name, value, group=group)
    return conf


@pytest.fixture
def oss_conf(oss_server, tmp_path):
    """Build an oss config for ``oss_server``; keyword args override."""
    def build(**overrides):
        values = {
            'endpoint': oss_server.endpoint, 'bucket': BUCKET,
            'access_key_id': KEY_ID, 'access_key_secret': SECRET,
            'region': REGION, 'auth_version': 'v4',
            'multipart_threshold': 200 * 1024, 'part_size': 100 * 1024,
            'upload_threads': 2, 'upload_retries': 2, 'retry_backoff': 0.01,
            'retry_backoff_max': 0.05, 'connect_timeout': 5,
            'checkpoint_dir': str(tmp_path / 'checkpoints'),
        }
        values.update(overrides)
        return make_conf('oss', oss=values)
    return build


@pytest.fixture
def make_file(tmp_path):
    """Write ``size`` deterministic bytes to a file; return (path, data)."""
    counter = iter(range(1000))

    def make(size, seed=0, name=None):
        data = random.Random(seed).randbytes(size)
        path = tmp_path / 'src' / (name or f'file-{next(counter)}.bin')
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return str(path), data
    return make


@pytest.fixture
def closed_port():
    """A local TCP port nothing listens on."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """A scratch $HOME, so a test can prove nothing is written there."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    yield home
    assert not os.path.exists(home / '.py-oss-upload')
