"""The image endpoint end to end: rpcmq-server daemons (eventlet) on
RabbitMQ download from a local image server into a file store or the
local OSS-compatible server; every failure reaches the caller typed."""

import concurrent.futures
import hashlib
import os
import threading
import uuid

import pytest

import rpcmq
from rpcmq.fetch.errors import (
    BadURL,
    DownloadFailed,
    ForbiddenAddress,
    NotAnImage,
    SpoolNotFound,
    TooLarge,
)
from rpcmq.storage.errors import StorageDenied
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.imageserver import ImageServer, make_image
from rpcmq.testing.ossserver import OSSServer
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.conftest import RABBIT_URL, require
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.functional.fixtures import wait_until

KIB = 1024
MAX_BYTES = 2 * 1024 * KIB
KEY_ID, SECRET = 'rpcmq-func-key', 'Func-S3cret-9c1e'
BUCKET, REGION = 'rpcmq-func', 'cn-functest'
# name -> (hosts, [DEFAULT] store, [oss] overrides)
DAEMONS = {
    'files': (('img-a', 'img-b'), 'file', None),
    'oss_v4': (('oss-v4',), 'oss', {'auth_version': 'v4'}),
    'oss_v1': (('oss-v1',), 'oss', {'auth_version': 'v1'}),
    'oss_stream': (('oss-stream',), 'oss', {
        'auth_version': 'v4', 'multipart_threshold': 64 * 1024 * KIB}),
    'oss_bad': (('oss-bad',), 'oss', {'auth_version': 'v4',
                                      'access_key_secret': 'not-the-s3cret'}),
}


@pytest.fixture(scope='module')
def images():
    with ImageServer() as srv:
        yield srv


@pytest.fixture(scope='module')
def oss():
    with OSSServer(credentials={KEY_ID: SECRET}, buckets=[BUCKET],
                   region=REGION) as srv:
        yield srv


def _daemon_config(path, host, topic, store, oss_overrides, workdir,
                   oss_endpoint):
    sections = {
        'DEFAULT': {
            'transport_url': RABBIT_URL, 'endpoints': 'image',
            'topic': topic, 'host': host, 'executor': 'eventlet',
            'graceful_shutdown_timeout': 5, 'store': store},
        'image': {
            # The guard stays on: only the local image server is let in.
            'allow_private_networks': False,
            'allowed_networks': '127.0.0.1/32',
            'spool_dir': workdir / ('spool-' + host),
            'max_image_bytes': MAX_BYTES, 'download_retries': 1,
            'download_backoff': 0.01},
        'file_store': {'root': workdir / 'store'},
    }
    if store == 'oss':
        sections['oss'] = dict({
            'endpoint': oss_endpoint, 'bucket': BUCKET,
            'access_key_id': KEY_ID, 'access_key_secret': SECRET,
            'region': REGION, 'multipart_threshold': 200 * KIB,
            'part_size': 100 * KIB, 'upload_threads': 2,
            'upload_retries': 1, 'retry_backoff': 0.01,
            'checkpoint_dir': workdir / ('ckpt-' + host)}, **oss_overrides)
    return write_config(path, sections)


class Cluster:
    """The daemons of ``DAEMONS`` (started together) and clients."""

    def __init__(self, workdir, oss_endpoint):
        self.workdir = workdir
        self.topics, self.daemons = {}, {}
        for name, (hosts, store, overrides) in DAEMONS.items():
            self.topics[name] = 'image_%s' % uuid.uuid4().hex[:10]
            for host in hosts:
                conf = _daemon_config(
                    workdir / (host + '.conf'), host,
                    self.topics[name], store, overrides or {}, workdir,
                    oss_endpoint)
                self.daemons[host] = Daemon('rpcmq-server', conf,
                                            workdir / (host + '.log'))
        for daemon in self.daemons.values():
            daemon.start()
        self.transport = rpcmq.get_transport(make_conf(), url=RABBIT_URL)

    def wait_ready(self):
        for daemon in self.daemons.values():
            daemon.wait_for_log('rpcmq-server started', timeout=30)

    def client(self, name='files', **prepare):
        client = rpcmq.RPCClient(
            self.transport, rpcmq.Target(topic=self.topics[name],
                                         namespace='image', version='1.0'),
            timeout=30)
        return client.prepare(**prepare) if prepare else client

    def stored(self, key):
        with open(self.workdir / 'store' / key, 'rb') as f:
            return f.read()

    def spool(self, host):
        path = self.workdir / ('spool-' + host)
        return sorted(os.listdir(path)) if path.exists() else []

    def close(self):
        self.transport.cleanup()
        codes = {}
        for host, daemon in self.daemons.items():
            try:
                codes[host] = daemon.terminate(timeout=15)
            except Exception:
                daemon.stop()
                codes[host] = 'killed'
        delete_entities(RABBIT_URL, [
            q for name, (hosts, _, _) in DAEMONS.items()
            for q in [self.topics[name]] + [
                '%s.%s' % (self.topics[name], h) for h in hosts]])
        return codes


@pytest.fixture(scope='module')
def cluster(tmp_path_factory, oss):
    require('rabbit')
    cluster = Cluster(tmp_path_factory.mktemp('image-rabbit'), oss.endpoint)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        codes = cluster.close()
    assert set(codes.values()) == {0}, codes


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


# -- file store ---------------------------------------------------------

def test_fetch_then_store_on_the_fetching_server(cluster, images):
    url = images.url('/img/cat.png?kb=60')
    body = make_image('png', 'cat', kb=60)
    handle = cluster.client().call({}, 'fetch', url=url)
    assert handle['server'] in ('img-a', 'img-b')
    assert (handle['size'], handle['sha256'], handle['format']) == (
        len(body), _sha256(body), 'png')
    assert handle['url'] == url
    assert handle['spool_id'] + '.img' in cluster.spool(handle['server'])
    stored = cluster.client(server=handle['server']).call(
        {}, 'store', spool_id=handle['spool_id'])
    assert stored['key'] == handle['url_sha1'] + '.png'
    assert stored['size'] == len(body)
    assert cluster.stored(stored['key']) == body
    assert _sha256(cluster.stored(stored['key'])) == handle['sha256']
    assert cluster.spool(handle['server']) == []  # freed once stored
    with pytest.raises(SpoolNotFound):  # and only stored once
        cluster.client(server=handle['server']).call(
            {}, 'store', spool_id=handle['spool_id'])


def test_transfer_in_one_call(cluster, images):
    url = images.url('/img/dog.jpg?w=320&h=240')
    body = make_image('jpg', 'dog', 320, 240)
    result = cluster.client().call({}, 'transfer', url=url,
                                   key='pets/dog.jpg')
    assert result['key'] == 'pets/dog.jpg' and result['source_url'] == url
    assert (result['width'], result['height']) == (320, 240)
    assert result['sha256'] == _sha256(body) and 'spool_id' not in result
    assert cluster.stored('pets/dog.jpg') == body
    assert images.count('/img/dog.jpg') == 1


@pytest.mark.parametrize('path, error, fields', [
    ('/status/404', DownloadFailed, {'status': 404, 'attempts': 1}),
    ('/status/503', DownloadFailed, {'status': 503, 'attempts': 2}),
    ('/img/huge.bmp?w=1000&h=800', TooLarge,
     {'unit': 'bytes', 'limit': MAX_BYTES, 'size': 1000 * 800 * 3 + 54}),
    ('/redirect-private', ForbiddenAddress, {'address': '10.1.2.3'}),
    ('/html', NotAnImage, {}),
    ('ftp://127.0.0.1/x.jpg', BadURL, {'url': 'ftp://127.0.0.1/x.jpg'}),
])
@pytest.mark.parametrize('method', ['fetch', 'transfer'])
def test_failures_arrive_typed(cluster, images, path, error, fields, method):
    url = path if '://' in path else images.url(path)
    with pytest.raises(error) as info:
        cluster.client().call({}, method, url=url)
    err = info.value
    assert type(err) is error
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, err.kwargs)
    if error is not BadURL:
        assert err.url.startswith('http://')
    assert cluster.spool('img-a') == cluster.spool('img-b') == []


def test_guard_refuses_a_private_address_directly(cluster):
    with pytest.raises(ForbiddenAddress) as info:
        cluster.client().call({}, 'fetch',
                              url='http://169.254.169.254/latest/meta-data')
    assert 'link-local' in info.value.reason


def test_unknown_spool_id_is_spool_not_found(cluster):
    client = cluster.client(server='img-a')
    with pytest.raises(SpoolNotFound) as info:
        client.call({}, 'store', spool_id=uuid.uuid4().hex)
    assert info.value.server == 'img-a'
    with pytest.raises(SpoolNotFound, match='32 hex digits'):
        client.call({}, 'store', spool_id='../../etc/passwd')


def test_two_servers_share_fetches_and_store_pinned(cluster, images):
    handles, errors = [], []

    def fetch(i):
        try:
            handles.append(cluster.client().call(
                {}, 'fetch', url=images.url('/img/s%d.webp?kb=20' % i)))
        except Exception as exc:  # pragma: no cover - shown on failure
            errors.append(exc)
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(24)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert errors == [] and len(handles) == 24
    by_server = {h['server'] for h in handles}
    assert by_server == {'img-a', 'img-b'}
    wrong = {'img-a': 'img-b', 'img-b': 'img-a'}
    # A store sent to the other server finds nothing there...
    first = handles[0]
    with pytest.raises(SpoolNotFound) as info:
        cluster.client(server=wrong[first['server']]).call(
            {}, 'store', spool_id=first['spool_id'])
    assert info.value.server == wrong[first['server']]
    assert info.value.spool_id == first['spool_id']
    # ...and each store sent to its fetching server succeeds.
    for h in handles:
        stored = cluster.client(server=h['server']).call(
            {}, 'store', spool_id=h['spool_id'], key='shared/' + h['url_sha1'])
        assert stored['size'] == h['size']
        assert _sha256(cluster.stored(stored['key'])) == h['sha256']
    assert cluster.spool('img-a') == cluster.spool('img-b') == []


# -- OSS-compatible store ----------------------------------------------

@pytest.mark.parametrize('version', ['v4', 'v1'])
def test_store_into_oss_single_put_and_multipart(cluster, images, oss,
                                                 version):
    client = cluster.client('oss_' + version)
    small_url = images.url('/img/oss-small-%s.jpg?kb=40' % version)
    small = make_image('jpg', 'oss-small-' + version, kb=40)
    handle = client.call({}, 'fetch', url=small_url)
    assert handle['server'] == 'oss-' + version
    oss.clear_log()
    stored = client.prepare(server=handle['server']).call(
        {}, 'store', spool_id=handle['spool_id'])
    assert oss.get_object(BUCKET, stored['key']) == small
    assert stored['etag'] == hashlib.md5(small).hexdigest().upper()
    assert stored['url'] == '%s/%s/%s' % (oss.endpoint, BUCKET,
                                          stored['key'])
    assert [(r['op'], r['auth']) for r in oss.requests()] == [
        ('PutObject', version)]

    big = make_image('png', 'oss-big-' + version, kb=450)
    assert len(big) > 2 * 200 * KIB
    oss.clear_log()
    result = client.call({}, 'transfer', key='big/%s.png' % version,
                         url=images.url('/img/oss-big-%s.png?kb=450'
                                        % version))
    assert result['size'] == len(big) and result['sha256'] == _sha256(big)
    assert oss.get_object(BUCKET, 'big/%s.png' % version) == big
    ops = oss.ops()
    assert ops[0] == 'InitiateMultipartUpload', ops
    assert ops[-1] == 'CompleteMultipartUpload', ops
    assert oss.count('UploadPart', status=200) >= 3
    assert {r['auth'] for r in oss.requests()} == {version}
    assert oss.upload_count() == 0
    assert cluster.spool('oss-' + version) == []


def test_a_large_transfer_goes_up_while_it_downloads(cluster, images, oss):
    """On the daemon's green threads: the PutObject receives the image
    while the image server still holds back its second half, and the
    object exists only once the download is whole."""
    client = cluster.client('oss_stream')
    key, url = 'stream/big.png', images.url('/gated/stream.png?kb=1500')
    oss.clear_log()
    images.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.call, {}, 'transfer', key=key, url=url)
        try:
            wait_until(lambda: [r for r in oss.receiving('PutObject')
                                if r['key'] == key and r['bytes_in'] > 0],
                       what='the upload to start during the download')
            assert oss.object_info(BUCKET, key) is None
        finally:
            images.gate.set()
        result = future.result(timeout=60)
    big = make_image('png', 'stream', kb=1500)
    assert result['size'] == len(big) > 1024 * KIB
    assert oss.get_object(BUCKET, key) == big
    assert [(r['op'], r['status']) for r in oss.requests()] == [
        ('PutObject', 200)]


def test_wrong_oss_secret_is_storage_denied(cluster, images, oss):
    client = cluster.client('oss_bad')
    url = images.url('/img/denied.png?kb=10')
    with pytest.raises(StorageDenied) as info:
        client.call({}, 'transfer', url=url, key='denied.png')
    err = info.value
    assert (err.status, err.code) == (403, 'SignatureDoesNotMatch')
    assert (err.access_key_id, err.bucket, err.key) == (
        KEY_ID, BUCKET, 'denied.png')
    assert oss.object_info(BUCKET, 'denied.png') is None
    assert 'not-the-s3cret' not in str(err) + str(err.kwargs)
    assert 'not-the-s3cret' not in cluster.daemons['oss-bad'].log()
    # transfer frees the spool whatever happens; a failed store() keeps
    # the file so the caller can retry it.
    assert cluster.spool('oss-bad') == []
    handle = client.call({}, 'fetch', url=url)
    with pytest.raises(StorageDenied):
        client.prepare(server='oss-bad').call(
            {}, 'store', spool_id=handle['spool_id'])
    assert handle['spool_id'] + '.img' in cluster.spool('oss-bad')
