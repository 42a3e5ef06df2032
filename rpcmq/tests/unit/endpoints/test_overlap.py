"""A large image goes up to OSS while it downloads, and is stored only once
the download is whole and verified (the real image and OSS-compatible
servers, the real oss store)."""

import concurrent.futures
import os

import pytest

from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.endpoints.overlap import OverlappedUpload
from rpcmq.fetch import NotAnImage
from rpcmq.testing.imageserver import make_image
from rpcmq.tests.functional.fixtures import wait_until
from rpcmq.tests.unit.conftest import BUCKET, KEY_ID, REGION, SECRET

CTXT = {}


@pytest.fixture
def endpoint(conf, oss_server, tmp_path):
    conf.set_override('store', 'oss')
    for name, value in {
            'endpoint': oss_server.endpoint, 'bucket': BUCKET,
            'region': REGION,
            'access_key_id': KEY_ID, 'access_key_secret': SECRET,
            'auth_version': 'v4', 'upload_retries': 1,
            'retry_backoff': 0.01,
            'checkpoint_dir': str(tmp_path / 'checkpoints')}.items():
        conf.set_override(name, value, 'oss')
    conf.set_override('overlap_min_bytes', 64 * 1024, 'image')
    conf.set_override('memory_max_bytes', 0, 'image')
    ep = ImageEndpoint(conf)
    yield ep
    ep.close()


@pytest.fixture
def gate(server):
    server.gate.clear()
    yield server.gate
    server.gate.set()  # never leave a handler waiting


@pytest.fixture
def background():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield pool


def _puts(oss_server, key, status=None):
    return [r for r in oss_server.requests('PutObject')
            if r['key'] == key and status in (None, r['status'])]


def _receiving(oss_server, key):
    return [r for r in oss_server.receiving('PutObject')
            if r['key'] == key and r['bytes_in'] > 0]


def test_a_large_image_goes_up_while_it_is_still_downloading(
        server, gate, oss_server, endpoint, background):
    url = server.url('/gated/large.png?kb=600')
    future = background.submit(endpoint.transfer, CTXT, url=url,
                               key='photos/large.png')

    # Half the image is downloaded and the server holds the rest back:
    # its bytes are already arriving at OSS, but no object exists yet.
    wait_until(lambda: _receiving(oss_server, 'photos/large.png'),
               what='the upload to start before the download ends')
    assert oss_server.object_info(BUCKET, 'photos/large.png') is None
    gate.set()

    result = future.result(timeout=30)
    image = make_image('png', 'large', kb=600)
    assert result['key'] == 'photos/large.png'
    assert result['size'] == len(image)
    assert oss_server.get_object(BUCKET, 'photos/large.png') == image
    assert [r['status'] for r in _puts(oss_server, 'photos/large.png')] \
        == [200]


def test_an_image_that_fails_verification_is_never_stored(
        server, gate, oss_server, endpoint, background, conf):
    url = server.url('/gated/broken.png?kb=600&corrupt=1')
    future = background.submit(endpoint.transfer, CTXT, url=url,
                               key='broken.png')
    wait_until(lambda: _receiving(oss_server, 'broken.png'),
               what='the upload to start')
    gate.set()

    with pytest.raises(NotAnImage):
        future.result(timeout=30)
    # The upload was cut before its last byte: OSS saw a request end early.
    wait_until(lambda: _puts(oss_server, 'broken.png'),
               what='the cut upload')
    assert [r['status'] for r in _puts(oss_server, 'broken.png')] == [
        'aborted']
    assert oss_server.object_info(BUCKET, 'broken.png') is None
    assert os.listdir(conf.image.spool_dir) == []


def test_a_download_cut_midway_is_uploaded_again_from_its_retry(
        server, oss_server, endpoint):
    # The first attempt ends halfway; the retry downloads it all.
    url = server.url('/flaky/cut.png?fail=1&mode=cut&kb=600')
    result = endpoint.transfer(CTXT, url=url, name='cut')

    image = make_image('png', 'cut', kb=600)
    assert result['key'] == 'cut.png'
    assert oss_server.get_object(BUCKET, 'cut.png') == image
    wait_until(lambda: len(_puts(oss_server, 'cut.png')) == 2,
               what='both uploads to be logged')
    assert sorted((r['status'] for r in _puts(oss_server, 'cut.png')),
                  key=str) == [200, 'aborted']


def test_a_store_failing_the_streamed_upload_gets_the_spooled_file(
        server, oss_server, endpoint):
    oss_server.fail_next(1, status=503, op='PutObject')
    url = server.url('/img/refused.jpg?kb=300')
    result = endpoint.transfer(CTXT, url=url)

    assert oss_server.get_object(BUCKET, result['key']) == make_image(
        'jpg', 'refused', kb=300)
    assert [r['status'] for r in _puts(oss_server, result['key'])] == [
        503, 200]


def test_the_default_key_template_is_known_from_the_first_bytes(
        server, gate, oss_server, endpoint, background):
    url = server.url('/gated/template.png?kb=600')
    future = background.submit(endpoint.transfer, CTXT, url=url)
    wait_until(lambda: oss_server.receiving('PutObject'), what='the upload')
    gate.set()
    result = future.result(timeout=30)
    assert result['key'].endswith('.png')
    assert [r['status'] for r in _puts(oss_server, result['key'])] == [200]


def _growing(tmp_path, data):
    """A file the test writes itself, as the fetcher would."""
    path = tmp_path / 'part'
    path.write_bytes(data[:len(data) // 2])
    return path


def test_an_upload_finished_under_another_key_or_size_is_cut(
        tmp_path, oss_server, endpoint):
    data = make_image('png', 'other', kb=300)
    for key, size in (('elsewhere.png', len(data)),
                      ('declared.png', len(data) - 1)):
        path = _growing(tmp_path, data)
        upload = OverlappedUpload(endpoint.store_driver,
                                  lambda fmt: 'declared.png', 1)
        upload.begin(str(path), len(data))
        upload.grew(len(data) // 2)
        wait_until(lambda: _receiving(oss_server, 'declared.png'),
                   what='upload')
        with open(path, 'ab') as f:
            f.write(data[len(data) // 2:])
        upload.grew(len(data))

        assert upload.finish(key, size) is None
        wait_until(lambda: not oss_server.receiving('PutObject'),
                   what='the cut')
        assert oss_server.object_info(BUCKET, 'declared.png') is None
    assert [r['status'] for r in _puts(oss_server, 'declared.png')] == [
        'aborted', 'aborted']


def test_a_key_made_from_the_content_hash_waits_for_the_download(
        server, oss_server, endpoint, conf):
    # The hash is known only at the end: no upload may start before.
    conf.set_override('key_template', '{sha256[0]}/{sha256}.{ext}', 'image')
    result = endpoint.transfer(CTXT, url=server.url('/img/hashed.png?kb=300'))

    digest = result['sha256']
    assert result['key'] == '%s/%s.png' % (digest[0], digest)
    wait_until(lambda: not oss_server.receiving('PutObject'), what='uploads')
    assert [r['status'] for r in oss_server.requests('PutObject')] == [200]
