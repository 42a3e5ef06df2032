"""The image endpoint against the local image server and the file store."""

import hashlib
import json
import os

import pytest
from stevedore import driver

from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.exceptions import ConfigError
from rpcmq.fetch import DownloadFailed, NotAnImage, SpoolNotFound
from rpcmq.storage import StorageError
from rpcmq.target import Target
from rpcmq.testing.imageserver import make_image

CTXT = {}


def _sha1(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _spool(conf):
    directory = conf.image.spool_dir
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _stored(conf, key):
    with open(os.path.join(conf.file_store.root, key), 'rb') as f:
        return f.read()


def _age(conf, spool_id, seconds):
    for suffix in ('.img', '.json'):
        path = os.path.join(conf.image.spool_dir, spool_id + suffix)
        old = os.stat(path).st_mtime - seconds
        os.utime(path, (old, old))


def test_target_and_entry_point(conf):
    assert ImageEndpoint.target == Target(namespace='image', version='1.2')
    mgr = driver.DriverManager('rpcmq.endpoints', 'image',
                               invoke_on_load=True, invoke_args=(conf,))
    assert isinstance(mgr.driver, ImageEndpoint)


def test_fetch_returns_handle_and_spools(server, conf, endpoint):
    url = server.url('/img/cat.jpg?w=40&h=30')
    body = make_image('jpg', 'cat', 40, 30)

    handle = endpoint.fetch(CTXT, url=url)

    assert json.loads(json.dumps(handle)) == handle
    spool_id = handle.pop('spool_id')
    assert handle == {
        'server': 'img-1', 'size': len(body), 'url': url,
        'url_sha1': _sha1(url), 'sha256': hashlib.sha256(body).hexdigest(),
        'format': 'jpeg', 'width': 40, 'height': 30,
        'content_type': 'image/jpeg'}
    assert _spool(conf) == [spool_id + '.img', spool_id + '.json']


def test_fetch_then_store_frees_spool(server, conf, endpoint):
    url = server.url('/img/dog.png')
    handle = endpoint.fetch(CTXT, url=url)

    result = endpoint.store(CTXT, spool_id=handle['spool_id'])

    key = _sha1(url) + '.png'
    body = make_image('png', 'dog')
    assert result['key'] == key
    assert result['size'] == len(body)
    assert result['etag'] == hashlib.md5(body).hexdigest()
    assert result['url'].endswith(key)
    # What the content is comes back too, for a caller that lost the handle.
    assert result['source_url'] == url
    assert result['sha256'] == hashlib.sha256(body).hexdigest()
    assert (result['format'], result['width'], result['height'],
            result['content_type']) == (handle['format'], handle['width'],
                                        handle['height'], 'image/png')
    assert _stored(conf, key) == body
    assert _spool(conf) == []
    with pytest.raises(SpoolNotFound):
        endpoint.store(CTXT, spool_id=handle['spool_id'])


def test_store_with_explicit_key(server, conf, endpoint):
    handle = endpoint.fetch(CTXT, url=server.url('/img/k.webp'))
    result = endpoint.store(CTXT, spool_id=handle['spool_id'],
                            key='shop/1/k.webp')
    assert result['key'] == 'shop/1/k.webp'
    assert _stored(conf, 'shop/1/k.webp') == make_image('webp', 'k')


@pytest.mark.parametrize('name, key', [('cats/tom', 'cats/tom.png'),
                                       ('cats/tom.PNG', 'cats/tom.PNG')])
def test_store_under_a_name_gets_the_images_extension(server, conf, endpoint,
                                                      name, key):
    handle = endpoint.fetch(CTXT, url=server.url('/img/tom.png'))
    result = endpoint.store(CTXT, spool_id=handle['spool_id'], name=name)
    assert result['key'] == key
    assert _stored(conf, key) == make_image('png', 'tom')


def test_store_survives_restart(server, conf, endpoint):
    handle = endpoint.fetch(CTXT, url=server.url('/img/restart.png'))
    endpoint.close()
    again = ImageEndpoint(conf)
    result = again.store(CTXT, spool_id=handle['spool_id'])
    assert result['key'] == handle['url_sha1'] + '.png'
    again.close()


@pytest.mark.parametrize('spool_id', ['0' * 32, '../../etc/passwd', ''])
def test_store_unknown_spool_id(conf, endpoint, spool_id):
    with pytest.raises(SpoolNotFound) as info:
        endpoint.store(CTXT, spool_id=spool_id)
    assert info.value.server == 'img-1'
    assert 'img-1' in str(info.value)


def test_transfer(server, conf, endpoint):
    url = server.url('/img/deal.jpg?w=20&h=20')
    result = endpoint.transfer(CTXT, url=url)

    key = _sha1(url) + '.jpg'
    assert result['key'] == key
    assert result['source_url'] == url
    assert result['url'].endswith(key)
    assert (result['format'], result['width'], result['height']) == (
        'jpeg', 20, 20)
    assert result['server'] == 'img-1'
    assert 'spool_id' not in result
    assert json.loads(json.dumps(result)) == result
    assert _stored(conf, key) == make_image('jpg', 'deal', 20, 20)
    assert _spool(conf) == []


def test_transfer_failures_leave_nothing(server, conf, endpoint):
    with pytest.raises(DownloadFailed) as info:
        endpoint.transfer(CTXT, url=server.url('/status/404'))
    assert info.value.status == 404
    with pytest.raises(NotAnImage):
        endpoint.transfer(CTXT, url=server.url('/html'))
    assert _spool(conf) == []
    assert not os.path.exists(conf.file_store.root) or not os.listdir(
        conf.file_store.root)


def test_store_failure_keeps_spool_for_a_retry(server, conf, endpoint):
    handle = endpoint.fetch(CTXT, url=server.url('/img/retry.png'))
    with pytest.raises(StorageError):
        endpoint.store(CTXT, spool_id=handle['spool_id'], key='../escape')
    assert len(_spool(conf)) == 2
    assert endpoint.store(CTXT, spool_id=handle['spool_id'])['size']


def test_a_transfer_whose_upload_fails_keeps_the_image_for_store(
        server, conf, endpoint):
    # A small image is held in memory; a failed upload puts it in the
    # spool, named in the error, for store() to retry without downloading.
    url = server.url('/img/kept.jpg?kb=20')
    with pytest.raises(StorageError) as info:
        endpoint.transfer(CTXT, url=url, key='../escape', keep_spool=True)
    spool_id = info.value.kwargs['spool_id']
    assert info.value.kwargs['server'] == 'img-1'
    assert _spool(conf) == [spool_id + '.img', spool_id + '.json']

    result = endpoint.store(CTXT, spool_id=spool_id, key='kept.jpg')
    assert _stored(conf, 'kept.jpg') == make_image('jpg', 'kept', kb=20)
    assert result['source_url'] == url
    assert server.count('/img/kept.jpg') == 1
    assert _spool(conf) == []


def test_a_transfer_without_keep_spool_leaves_nothing(server, conf,
                                                      endpoint):
    with pytest.raises(StorageError):
        endpoint.transfer(CTXT, url=server.url('/img/gone.jpg?kb=20'),
                          key='../escape')
    assert _spool(conf) == []


def test_expired_spool_entry(server, conf, endpoint):
    handle = endpoint.fetch(CTXT, url=server.url('/img/old.png'))
    _age(conf, handle['spool_id'], conf.image.spool_ttl + 1)
    with pytest.raises(SpoolNotFound, match='expired'):
        endpoint.store(CTXT, spool_id=handle['spool_id'])
    assert _spool(conf) == []


def test_fetch_sweeps_expired_entries(server, conf, endpoint):
    old = endpoint.fetch(CTXT, url=server.url('/img/sweep1.png'))
    _age(conf, old['spool_id'], conf.image.spool_ttl + 1)
    endpoint.spool.sweep_interval = 0
    new = endpoint.fetch(CTXT, url=server.url('/img/sweep2.png'))
    assert _spool(conf) == [new['spool_id'] + '.img',
                            new['spool_id'] + '.json']


def test_key_template(server, conf):
    conf.set_override('key_template', 'img/{name}-{sha256}.{ext}', 'image')
    endpoint = ImageEndpoint(conf)
    url = server.url('/img/Sun%20set.gif')
    result = endpoint.transfer(CTXT, url=url)
    body = make_image('gif', 'Sun set')
    assert result['key'] == 'img/Sun_set-%s.gif' % (
        hashlib.sha256(body).hexdigest())


def test_bad_key_template(server, conf):
    conf.set_override('key_template', '{nope}.{ext}', 'image')
    endpoint = ImageEndpoint(conf)
    with pytest.raises(ConfigError, match='key_template'):
        endpoint.transfer(CTXT, url=server.url('/img/t.png'))
    assert _spool(conf) == []


def test_store_is_built_lazily(server, conf):
    conf.set_override('store', 'oss')
    endpoint = ImageEndpoint(conf)        # no OSS settings: still fine
    handle = endpoint.fetch(CTXT, url=server.url('/img/lazy.png'))
    with pytest.raises(ConfigError, match='oss'):
        endpoint.store(CTXT, spool_id=handle['spool_id'])
    assert len(_spool(conf)) == 2
