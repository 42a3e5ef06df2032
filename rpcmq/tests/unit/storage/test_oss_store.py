"""The oss store against rpcmq.testing.ossserver: real HTTP, real oss2."""

import base64
import hashlib
import hmac
import json
import logging
import os
import pickle
import time
import urllib.parse

import pytest
from oss2.utils import Crc64

from rpcmq.exceptions import ConfigError
from rpcmq.storage import get_store
from rpcmq.storage.errors import (
    InvalidKey,
    NoSuchObject,
    StorageDenied,
    StorageError,
    StorageUnavailable,
)
from rpcmq.storage.oss import OSSStore, crc64_of_file
from rpcmq.tests.unit.storage.conftest import BUCKET, KEY_ID, SECRET

KIB = 1024


def _crc64(data):
    crc = Crc64()
    crc.update(data)
    return crc.crc


def _statuses(server, op):
    return [r['status'] for r in server.requests(op)]


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_put_small_object(oss_server, oss_conf, make_file, version):
    store = get_store(oss_conf(auth_version=version))
    assert isinstance(store, OSSStore)
    path, data = make_file(50 * KIB)
    result = store.put_file('images/cat 1.jpg', path)
    assert result == {
        'key': 'images/cat 1.jpg', 'size': len(data),
        'etag': hashlib.md5(data).hexdigest().upper(),
        'url': f'{oss_server.endpoint}/{BUCKET}/images/cat%201.jpg'}
    put = oss_server.requests('PutObject')
    assert [(r['status'], r['auth'], r['access_key_id']) for r in put] == [
        (200, version, KEY_ID)]
    assert oss_server.get_object(BUCKET, 'images/cat 1.jpg') == data
    # the server returned the CRC64 of what it stored; oss2 compared it
    assert oss_server.object_info(BUCKET, 'images/cat 1.jpg').crc64 == \
        _crc64(data)
    assert store.exists('images/cat 1.jpg')
    assert not store.exists('images/dog.jpg')
    assert store.get_bytes('images/cat 1.jpg') == data
    assert store.open('images/cat 1.jpg').read() == data


def test_crc_mismatch_is_detected_and_retried(oss_server, oss_conf,
                                              make_file):
    path, data = make_file(10 * KIB)
    oss_server.fail_next(1, op='PutObject', mode='bad_crc')
    get_store(oss_conf()).put_file('crc.bin', path)
    assert oss_server.count('PutObject') == 2
    oss_server.fail_next(5, op='PutObject', mode='bad_crc')
    with pytest.raises(StorageUnavailable, match='CRC64') as info:
        get_store(oss_conf(upload_retries=1)).put_file('crc.bin', path)
    assert info.value.attempts == 2


def test_the_store_computes_the_crc64_oss_computes(make_file):
    # Across the 1 MiB reads of crc64_of_file, and for an empty file.
    for size in (0, 1, 1024 * KIB - 1, 1024 * KIB, 2500 * KIB + 7):
        path, data = make_file(size, seed=size)
        assert crc64_of_file(path) == _crc64(data)


def test_a_multipart_upload_is_checked_as_a_whole_object(
        oss_server, oss_conf, make_file):
    path, data = make_file(450 * KIB + 1)
    oss_server.fail_next(1, op='CompleteMultipartUpload', mode='bad_crc')
    get_store(oss_conf()).put_file('crc/multi.bin', path)
    # the first object answered with a wrong CRC64; it was sent again
    assert oss_server.count('CompleteMultipartUpload') == 2
    assert oss_server.get_object(BUCKET, 'crc/multi.bin') == data
    oss_server.fail_next(5, op='CompleteMultipartUpload', mode='bad_crc')
    with pytest.raises(StorageUnavailable, match='CRC64'):
        get_store(oss_conf(upload_retries=1)).put_file('crc/multi.bin', path)


def test_a_read_with_a_wrong_crc64_is_retried(oss_server, oss_conf,
                                              make_file):
    store = get_store(oss_conf())
    path, data = make_file(30 * KIB)
    store.put_file('crc/read.bin', path)
    oss_server.fail_next(1, op='GetObject', mode='bad_crc')
    assert store.get_bytes('crc/read.bin') == data
    assert oss_server.count('GetObject') == 2
    oss_server.fail_next(5, op='GetObject', mode='bad_crc')
    with pytest.raises(StorageUnavailable, match='CRC64'):
        get_store(oss_conf(upload_retries=1)).get_bytes('crc/read.bin')


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_wrong_secret_is_denied_without_retry(oss_server, oss_conf,
                                              make_file, version, caplog):
    caplog.set_level(logging.DEBUG)
    store = get_store(oss_conf(auth_version=version,
                               access_key_secret='not-the-secret'))
    path, _ = make_file(1 * KIB)
    with pytest.raises(StorageDenied) as info:
        store.put_file('x.jpg', path)
    err = info.value
    assert err.status == 403 and err.code == 'SignatureDoesNotMatch'
    assert err.access_key_id == KEY_ID and err.key == 'x.jpg'
    assert 'access_key_id' in str(err) and 'x.jpg' in str(err)
    assert oss_server.count('PutObject') == 1  # 403 is not retried
    assert oss_server.object_info(BUCKET, 'x.jpg') is None
    with pytest.raises(StorageDenied):
        store.exists('x.jpg')
    for text in (str(err), json.dumps(err.kwargs), caplog.text):
        assert 'not-the-secret' not in text


def test_unknown_key_id_and_wrong_region_are_denied(oss_conf, make_file):
    path, _ = make_file(10)
    with pytest.raises(StorageDenied) as info:
        get_store(oss_conf(access_key_id='nobody')).put_file('x', path)
    assert info.value.code == 'InvalidAccessKeyId'
    with pytest.raises(StorageDenied):
        get_store(oss_conf(region='cn-elsewhere')).put_file('x', path)


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_multipart_upload_above_threshold(oss_server, oss_conf, make_file,
                                          tmp_path, version):
    store = get_store(oss_conf(auth_version=version))
    path, data = make_file(450 * KIB + 123)
    result = store.put_file('big/file.bin', path)
    ops = oss_server.ops()
    assert ops[0] == 'InitiateMultipartUpload'
    assert ops[-1] == 'CompleteMultipartUpload'
    assert ops.count('UploadPart') == 5  # 100 KiB parts
    assert 'PutObject' not in ops
    assert all(r['status'] in (200, 204) for r in oss_server.requests())
    info = oss_server.object_info(BUCKET, 'big/file.bin')
    assert info.object_type == 'Multipart' and info.crc64 == _crc64(data)
    assert oss_server.get_object(BUCKET, 'big/file.bin') == data
    assert result['size'] == len(data) and result['etag'].endswith('-5')
    assert oss_server.upload_count() == 0
    # the checkpoint lived in checkpoint_dir and is gone once done
    assert os.listdir(tmp_path / 'checkpoints' / 'upload') == []


def test_below_threshold_is_a_single_put(oss_server, oss_conf, make_file):
    path, _ = make_file(200 * KIB - 1)
    get_store(oss_conf()).put_file('edge.bin', path)
    assert oss_server.ops() == ['PutObject']


def test_interrupted_multipart_upload_resumes(oss_server, oss_conf,
                                              make_file, tmp_path):
    conf = oss_conf(upload_retries=0, upload_threads=1)
    path, data = make_file(450 * KIB)
    oss_server.fail_next(1, status=503, op='UploadPart', after=2)
    with pytest.raises(StorageUnavailable):
        get_store(conf).put_file('resume.bin', path)
    records = os.listdir(tmp_path / 'checkpoints' / 'upload')
    assert len(records) == 1  # the checkpoint stays for the next try
    assert oss_server.upload_count() == 1
    assert _statuses(oss_server, 'UploadPart') == [200, 200, 503]

    get_store(conf).put_file('resume.bin', path)
    assert oss_server.count('InitiateMultipartUpload') == 1
    assert _statuses(oss_server, 'UploadPart') == [200] * 2 + [503] + \
        [200] * 3  # only the missing parts went up again
    assert oss_server.get_object(BUCKET, 'resume.bin') == data
    assert os.listdir(tmp_path / 'checkpoints' / 'upload') == []


def test_failed_part_is_retried_within_one_put(oss_server, oss_conf,
                                               make_file):
    path, data = make_file(350 * KIB)
    oss_server.fail_next(1, status=500, op='UploadPart', after=1)
    get_store(oss_conf(upload_threads=1)).put_file('retry.bin', path)
    assert oss_server.count('InitiateMultipartUpload') == 1
    assert oss_server.count('UploadPart', status=500) == 1
    assert oss_server.count('UploadPart', status=200) == 4
    assert oss_server.get_object(BUCKET, 'retry.bin') == data


def test_503_twice_then_success(oss_server, oss_conf, make_file, caplog):
    path, data = make_file(10 * KIB)
    oss_server.fail_next(2, status=503)
    with caplog.at_level(logging.WARNING, logger='rpcmq.storage.oss'):
        get_store(oss_conf(upload_retries=3)).put_file('flaky.bin', path)
    assert _statuses(oss_server, 'PutObject') == [503, 503, 200]
    retries = [r for r in caplog.records if 'retrying' in r.getMessage()]
    assert len(retries) == 2
    assert oss_server.get_object(BUCKET, 'flaky.bin') == data


def test_5xx_after_all_retries(oss_server, oss_conf, make_file):
    path, _ = make_file(10)
    oss_server.fail_next(10, status=502)
    with pytest.raises(StorageUnavailable) as info:
        get_store(oss_conf(upload_retries=2)).put_file('down.bin', path)
    err = info.value
    assert err.attempts == 3 and oss_server.count('PutObject') == 3
    assert 'HTTP 502' in str(err) and 'down.bin' in str(err)


def test_dropped_connection_is_retried(oss_server, oss_conf, make_file):
    path, data = make_file(10 * KIB)
    oss_server.fail_next(1, mode='disconnect')
    get_store(oss_conf()).put_file('drop.bin', path)
    assert _statuses(oss_server, 'PutObject') == ['disconnected', 200]
    assert oss_server.get_object(BUCKET, 'drop.bin') == data


def test_unreachable_endpoint(oss_conf, make_file, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    store = get_store(oss_conf(endpoint=f'http://127.0.0.1:{closed_port}',
                               upload_retries=2))
    path, _ = make_file(10)
    with pytest.raises(StorageUnavailable) as info:
        store.put_file('k.bin', path)
    err = info.value
    assert err.attempts == 3 and err.op == 'put' and err.key == 'k.bin'
    assert str(closed_port) in str(err) and 'connection failed' in str(err)
    assert SECRET not in caplog.text and SECRET not in str(err)
    rebuilt = StorageUnavailable(err.message, **err.kwargs)
    assert str(rebuilt) == str(err)
    assert json.loads(json.dumps(err.kwargs)) == err.kwargs
    assert type(pickle.loads(pickle.dumps(err))) is StorageUnavailable


def test_same_key_twice_is_safe(oss_server, oss_conf, make_file):
    store = get_store(oss_conf())
    first, _ = make_file(10 * KIB, seed=1)
    second, data = make_file(300 * KIB, seed=2)
    a = store.put_file('same.bin', first)
    assert store.put_file('same.bin', first) == a
    store.put_file('same.bin', second)  # multipart over a single put
    assert store.get_bytes('same.bin') == data
    store.put_file('same.bin', second)
    assert oss_server.get_object(BUCKET, 'same.bin') == data


def test_secret_never_logged_or_reported(oss_server, oss_conf, make_file,
                                         caplog):
    caplog.set_level(logging.DEBUG)
    store = get_store(oss_conf(auth_version='v1'))
    path, _ = make_file(250 * KIB)
    store.put_file('log/a.bin', path)
    oss_server.fail_next(10, status=503)
    with pytest.raises(StorageUnavailable) as info:
        store.put_file('log/b.bin', path)
    assert caplog.records  # oss2 and rpcmq did log at DEBUG
    assert SECRET not in caplog.text
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_delete_and_missing_objects(oss_server, oss_conf, make_file):
    store = get_store(oss_conf())
    path, _ = make_file(10)
    store.put_file('gone.bin', path)
    store.delete('gone.bin')
    assert not store.exists('gone.bin')
    store.delete('gone.bin')  # no error for a missing key
    with pytest.raises(NoSuchObject, match='gone.bin'):
        store.get_bytes('gone.bin')


@pytest.mark.parametrize('key', ['', '/abs.jpg', 'a\x00b', 'k' * 1024])
def test_invalid_keys_never_reach_the_server(oss_server, oss_conf, key,
                                             make_file):
    store = get_store(oss_conf())
    path, _ = make_file(10)
    for call in (lambda: store.put_file(key, path),
                 lambda: store.exists(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKey):
            call()
    assert oss_server.requests() == []


def test_missing_bucket_is_a_storage_error(oss_conf, make_file):
    path, _ = make_file(10)
    with pytest.raises(StorageError, match='NoSuchBucket'):
        get_store(oss_conf(bucket='no-such-bucket')).put_file('k', path)


def test_public_base_url(oss_conf, make_file):
    store = get_store(oss_conf(public_base_url='https://img.example.com/'))
    path, _ = make_file(10)
    assert store.put_file('a/b c.jpg', path)['url'] == \
        'https://img.example.com/a/b%20c.jpg'


def test_signed_url_is_signed_here_with_the_secret(oss_server, oss_conf):
    """What the dashboard sends a browser to for a thumbnail: a v1
    presigned GET of the key, valid for ``expires`` seconds, signed
    locally (no request) with the secret, which it never shows."""
    store = get_store(oss_conf(auth_version='v1'))
    before = int(time.time())
    url = store.signed_url('cats/tom 1.jpg', 300)
    parts = urllib.parse.urlsplit(url)
    assert f'{parts.scheme}://{parts.netloc}' == oss_server.endpoint
    assert parts.path == f'/{BUCKET}/cats/tom%201.jpg'
    query = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=True))
    assert set(query) == {'OSSAccessKeyId', 'Expires', 'Signature'}
    assert query['OSSAccessKeyId'] == KEY_ID
    expires = int(query['Expires'])
    assert before + 300 <= expires <= int(time.time()) + 300
    wanted = base64.b64encode(hmac.new(
        SECRET.encode(), f'GET\n\n\n{expires}\n/{BUCKET}/cats/tom 1.jpg'
        .encode(), hashlib.sha1).digest()).decode()
    assert query['Signature'] == wanted
    assert SECRET not in url
    assert oss_server.requests() == []
    with pytest.raises(InvalidKey):
        store.signed_url('/absolute', 300)


def test_domain_endpoint_url_is_virtual_host_style(oss_conf):
    store = get_store(oss_conf(endpoint='oss-cn-hangzhou.aliyuncs.com'))
    assert store.url_for('k.jpg') == \
        f'http://{BUCKET}.oss-cn-hangzhou.aliyuncs.com/k.jpg'


def test_configuration_errors(oss_conf):
    with pytest.raises(ConfigError, match=r'\[oss\] endpoint'):
        get_store(oss_conf(endpoint=''))
    with pytest.raises(ConfigError, match='needs .oss. region'):
        get_store(oss_conf(region=''))
    with pytest.raises(ConfigError) as info:
        get_store(oss_conf(access_key_secret=''))
    assert 'access_key_secret' in str(info.value)
    with pytest.raises(ConfigError, match='not valid'):
        get_store(oss_conf(bucket='B!'))
