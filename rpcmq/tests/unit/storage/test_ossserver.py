"""rpcmq.testing.ossserver driven by plain oss2: signatures and the API."""

import base64
import concurrent.futures
import email.utils
import time

import oss2
import pytest
import requests
from oss2 import exceptions as oss_exc
from oss2.models import PartInfo

from rpcmq.testing import osssign
from rpcmq.tests.unit.storage.conftest import BUCKET, KEY_ID, REGION, SECRET


def _bucket(server, version='v1', secret=SECRET, key_id=KEY_ID):
    if version == 'v4':
        auth = oss2.AuthV4(key_id, secret)
    else:
        auth = oss2.Auth(key_id, secret)
    return oss2.Bucket(auth, server.endpoint, BUCKET, region=REGION,
                       connect_timeout=5)


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_signed_object_round_trip(oss_server, version):
    bucket = _bucket(oss_server, version)
    key = 'dir/ü nicode+%?&=.txt'
    result = bucket.put_object(key, b'hello world',
                               headers={'x-oss-meta-a': 'b'})
    assert result.status == 200 and result.crc is not None
    assert result.request_id
    got = bucket.get_object(key)
    assert got.read() == b'hello world'
    assert got.server_crc == got.client_crc
    assert bucket.get_object(key, byte_range=(2, 4)).read() == b'llo'
    assert bucket.object_exists(key)
    assert bucket.head_object(key).content_length == 11
    bucket.delete_object(key)
    assert not bucket.object_exists(key)
    assert {r['auth'] for r in oss_server.requests()} == {version}


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_wrong_secret_gets_signature_does_not_match(oss_server, version):
    bucket = _bucket(oss_server, version, secret='wrong')
    with pytest.raises(oss_exc.SignatureDoesNotMatch) as info:
        bucket.put_object('k', b'x' * 100000)
    assert info.value.status == 403 and info.value.request_id
    with pytest.raises(oss_exc.ServerError) as info:  # HEAD: x-oss-err
        bucket.get_object_meta('k')
    assert info.value.code == 'SignatureDoesNotMatch'
    # the connection stays usable after a rejected body
    _bucket(oss_server, version).put_object('k', b'ok')
    assert oss_server.get_object(BUCKET, 'k') == b'ok'


def test_unsigned_and_unknown_requests(oss_server):
    resp = requests.get(f'{oss_server.endpoint}/{BUCKET}/k', timeout=5)
    assert resp.status_code == 403 and b'<Code>AccessDenied' in resp.content
    assert resp.headers['x-oss-request-id']
    with pytest.raises(oss_exc.ServerError) as info:
        _bucket(oss_server, key_id='nobody').put_object('k', b'x')
    assert info.value.code == 'InvalidAccessKeyId'
    bucket = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), oss_server.endpoint,
                         'missing-bucket')
    with pytest.raises(oss_exc.NoSuchBucket):
        bucket.put_object('k', b'x')
    with pytest.raises(oss_exc.NoSuchKey):
        _bucket(oss_server).get_object('absent')


def test_content_md5_and_chunked_bodies(oss_server):
    bucket = _bucket(oss_server)
    with pytest.raises(oss_exc.InvalidDigest):
        bucket.put_object('m', b'data', headers={
            'Content-MD5': base64.b64encode(b'0' * 16).decode()})
    bucket.put_object('m', b'data', headers={
        'Content-MD5': oss2.utils.content_md5(b'data')})
    bucket.put_object('chunked', (c for c in [b'ab', b'cd', b'ef']))
    assert oss_server.get_object(BUCKET, 'chunked') == b'abcdef'


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_multipart_api(oss_server, version):
    bucket = _bucket(oss_server, version)
    part = b'p' * (100 * 1024)
    upload_id = bucket.init_multipart_upload('mp').upload_id
    r1 = bucket.upload_part('mp', upload_id, 1, part)
    r2 = bucket.upload_part('mp', upload_id, 2, b'tail')
    listed = bucket.list_parts('mp', upload_id).parts
    assert [(p.part_number, p.etag, p.size) for p in listed] == [
        (1, r1.etag, len(part)), (2, r2.etag, 4)]
    with pytest.raises(oss_exc.ServerError) as info:
        bucket.complete_multipart_upload('mp', upload_id, [
            PartInfo(1, r1.etag), PartInfo(2, 'BAD')])
    assert info.value.code == 'InvalidPart'
    parts = [PartInfo(1, r1.etag, size=len(part), part_crc=r1.crc),
             PartInfo(2, r2.etag, size=4, part_crc=r2.crc)]
    done = bucket.complete_multipart_upload('mp', upload_id, parts)
    assert done.etag.endswith('-2')  # and oss2 checked the combined CRC
    assert oss_server.get_object(BUCKET, 'mp') == part + b'tail'
    other = bucket.init_multipart_upload('mp2').upload_id
    bucket.abort_multipart_upload('mp2', other)
    with pytest.raises(oss_exc.NoSuchUpload):
        bucket.list_parts('mp2', other)
    assert oss_server.upload_count() == 0


def test_small_middle_part_is_rejected(oss_server):
    bucket = _bucket(oss_server)
    upload_id = bucket.init_multipart_upload('s').upload_id
    r1 = bucket.upload_part('s', upload_id, 1, b'small')
    r2 = bucket.upload_part('s', upload_id, 2, b'tail')
    with pytest.raises(oss_exc.ServerError) as info:
        bucket.complete_multipart_upload('s', upload_id, [
            PartInfo(1, r1.etag), PartInfo(2, r2.etag)])
    assert info.value.code == 'EntityTooSmall'


def test_virtual_host_style(oss_server):
    host = f'{BUCKET}.oss.example:{oss_server.port}'
    req = oss2.http.Request('PUT', f'http://{host}/vh.txt', data=b'vhost',
                            headers={'Host': host})
    oss2.Auth(KEY_ID, SECRET)._sign_request(req, BUCKET, 'vh.txt')
    resp = requests.put(f'{oss_server.endpoint}/vh.txt', data=b'vhost',
                        headers=dict(req.headers), timeout=5)
    assert resp.status_code == 200, resp.text
    assert oss_server.get_object(BUCKET, 'vh.txt') == b'vhost'


def test_fault_injection_and_log(oss_server):
    bucket = _bucket(oss_server)
    oss_server.fail_next(1, status=500, op='GetObject')
    bucket.put_object('f', b'1')
    with pytest.raises(oss_exc.ServerError) as info:
        bucket.get_object('f')
    assert info.value.status == 500 and info.value.code == 'InternalError'
    assert bucket.get_object('f').read() == b'1'
    assert oss_server.ops() == ['PutObject', 'GetObject', 'GetObject']
    assert oss_server.count('GetObject', status=500) == 1
    oss_server.clear_log()
    assert oss_server.requests() == []


def test_concurrent_uploads(oss_server):
    bucket = _bucket(oss_server, 'v4')
    blobs = {f'c/{i}': bytes([i]) * (50 * 1024 + i) for i in range(8)}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: bucket.put_object(*kv), blobs.items()))
    for key, data in blobs.items():
        assert oss_server.get_object(BUCKET, key) == data


class _Headers(dict):
    def get(self, name, default=None):
        return super().get(name.lower(), default)


def test_verify_rejects_skewed_and_malformed_requests():
    secrets = {KEY_ID: SECRET}
    old = email.utils.formatdate(time.time() - 3600, usegmt=True)
    headers = _Headers({'date': old, 'authorization': f'OSS {KEY_ID}:sig'})
    with pytest.raises(osssign.SignatureError) as info:
        osssign.verify('GET', BUCKET, 'k', {}, headers, secrets)
    assert info.value.code == 'RequestTimeTooSkewed'
    headers['authorization'] = 'OSS4-HMAC-SHA256 Credential=x'
    with pytest.raises(osssign.SignatureError) as info:
        osssign.verify('GET', BUCKET, 'k', {}, headers, secrets)
    assert info.value.code == 'InvalidArgument'
