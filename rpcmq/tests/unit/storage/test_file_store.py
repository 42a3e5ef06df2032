"""The file store: atomic writes, nested keys, keys that try to escape."""

import hashlib
import json
import os
import pickle

import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.storage import get_store
from rpcmq.storage.errors import InvalidKey, NoSuchObject, StorageError
from rpcmq.storage.file import FileStore
from rpcmq.tests.unit.storage.conftest import make_conf


@pytest.fixture
def root(tmp_path):
    return tmp_path / 'store'


@pytest.fixture
def store(root):
    return get_store(make_conf('file', file_store={'root': str(root)}))


def _all_files(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, files in os.walk(path) for f in files)


def test_get_store_builds_the_file_store(store, root):
    assert isinstance(store, FileStore)
    assert store.root == str(root)
    assert root.is_dir()


def test_put_exists_get_delete(store, root, make_file):
    path, data = make_file(5000)
    result = store.put_file('cat.jpg', path)
    assert result == {'key': 'cat.jpg', 'size': 5000,
                      'etag': hashlib.md5(data).hexdigest(),
                      'url': (root / 'cat.jpg').as_uri()}
    assert store.exists('cat.jpg')
    assert store.get_bytes('cat.jpg') == data
    with store.open('cat.jpg') as f:
        assert f.read() == data
    store.delete('cat.jpg')
    assert not store.exists('cat.jpg')
    store.delete('cat.jpg')  # deleting a missing key is a no-op
    with pytest.raises(NoSuchObject, match='cat.jpg'):
        store.get_bytes('cat.jpg')


def test_nested_keys_create_directories(store, root, make_file):
    path, data = make_file(10)
    store.put_file('a/b/c.jpg', path)
    assert (root / 'a' / 'b' / 'c.jpg').read_bytes() == data
    assert store.exists('a/b/c.jpg')
    assert not store.exists('a/b')  # a directory is not an object


def test_base_url_prefixes_the_key(root, make_file):
    store = get_store(make_conf('file', file_store={
        'root': str(root), 'base_url': 'https://cdn.example.com/img/'}))
    path, _ = make_file(3)
    result = store.put_file('x y/z.png', path)
    assert result['url'] == 'https://cdn.example.com/img/x%20y/z.png'


def test_same_key_twice_overwrites(store, make_file):
    first, _ = make_file(100, seed=1)
    second, data = make_file(200, seed=2)
    store.put_file('k.bin', first)
    again = store.put_file('k.bin', first)
    assert again['etag'] == hashlib.md5(open(first, 'rb').read()).hexdigest()
    result = store.put_file('k.bin', second)
    assert result['size'] == 200
    assert store.get_bytes('k.bin') == data


def test_write_is_atomic_and_leaves_no_temp_files(store, root, make_file,
                                                  monkeypatch):
    path, data = make_file(1000, seed=1)
    store.put_file('d/obj', path)
    assert _all_files(root) == ['d/obj']

    def broken_replace(src, dst):
        raise OSError(28, 'No space left on device')
    other, _ = make_file(1000, seed=2)
    monkeypatch.setattr(os, 'replace', broken_replace)
    with pytest.raises(StorageError, match='No space left') as info:
        store.put_file('d/obj', other)
    assert not isinstance(info.value, InvalidKey)
    assert _all_files(root) == ['d/obj']  # no temp file left behind
    assert store.get_bytes('d/obj') == data  # old object intact


def test_missing_source_file(store, root, tmp_path):
    with pytest.raises(StorageError, match='cannot read source file'):
        store.put_file('x', str(tmp_path / 'nope'))
    assert _all_files(root) == []


@pytest.mark.parametrize('key', [
    '../x', '/etc/passwd', 'a/../../x', 'a\x00b', '', '..', '.', 'a/./b',
    'a//b', 'a/', 'a\\..\\x', '..\\x', 'x\n', 'a' * 1024,
])
def test_escaping_and_bad_keys_are_rejected(store, root, tmp_path, key,
                                            make_file):
    path, _ = make_file(10)
    before = _all_files(tmp_path)
    with pytest.raises(InvalidKey) as info:
        store.put_file(key, path)
    assert repr(key)[:60] in str(info.value)
    assert info.value.kwargs['key'] == key
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)
    assert _all_files(tmp_path) == before


def test_non_str_key(store, make_file):
    path, _ = make_file(1)
    with pytest.raises(InvalidKey, match='must be a str'):
        store.put_file(b'bytes', path)


def test_symlinked_directory_cannot_escape(store, root, tmp_path, make_file):
    outside = tmp_path / 'outside'
    outside.mkdir()
    os.symlink(outside, root / 'link')
    path, _ = make_file(10)
    with pytest.raises(InvalidKey, match='outside the store root'):
        store.put_file('link/x', path)
    assert list(outside.iterdir()) == []


def test_errors_rebuild_from_their_fields():
    err = InvalidKey(key='../x', reason='bad')
    assert json.loads(json.dumps(err.kwargs)) == err.kwargs
    again = type(err)(err.message, **err.kwargs)
    assert str(again) == str(err) and again.key == '../x'
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is InvalidKey and str(copy) == str(err)
    assert isinstance(err, ValueError) and isinstance(err, StorageError)


def test_unknown_store_name_lists_choices():
    class Conf:
        store = 'ftp'
    with pytest.raises(ConfigError) as info:
        get_store(Conf())
    assert "'ftp'" in str(info.value)
    assert 'file, oss' in str(info.value)


def test_storage_options_are_documented():
    from rpcmq.conf import storage as storage_opts
    groups = dict(storage_opts.list_opts())
    assert set(groups) == {'DEFAULT', 'file_store', 'oss'}
    for opts in groups.values():
        for opt in opts:
            assert opt.help, opt.name
    oss = {opt.name: opt for opt in groups['oss']}
    assert oss['access_key_secret'].secret
    conf = make_conf()
    assert conf.store == 'file'
    assert conf.oss.multipart_threshold == 64 * 1024 * 1024
    assert conf.oss.part_size == 8 * 1024 * 1024
    assert conf.oss.upload_retries == 3
    assert conf.oss.checkpoint_dir == ''  # inside the image spool


def test_oss_checkpoints_default_to_the_image_spool(tmp_path):
    from rpcmq.storage.oss import OSSStore
    conf = make_conf('oss', oss={'endpoint': 'http://127.0.0.1:1',
                                 'bucket': 'images', 'access_key_id': 'k',
                                 'access_key_secret': 's'})
    conf.set_override('spool_dir', str(tmp_path / 'spool'), group='image')
    store = OSSStore(conf)
    assert store.checkpoint_dir == str(tmp_path / 'spool' / 'oss-checkpoints')
    assert not store.checkpoint_dir.startswith(os.path.expanduser('~'))
