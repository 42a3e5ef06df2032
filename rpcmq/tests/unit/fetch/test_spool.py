import os

import pytest

from rpcmq.fetch import Spool, SpoolNotFound


@pytest.fixture
def pool(tmp_path):
    return Spool(str(tmp_path), ttl=60, server='srv1')


def _entry(pool, data=b'img'):
    spool_id = pool.new_id()
    with open(pool.data_path(spool_id), 'wb') as f:
        f.write(data)
    pool.put(spool_id, {'url': 'http://x/y.jpg', 'format': 'jpeg'})
    return spool_id


def _age(pool, name, seconds):
    path = os.path.join(pool.directory, name)
    old = os.stat(path).st_mtime - seconds
    os.utime(path, (old, old))


def test_put_get_remove(pool):
    spool_id = _entry(pool)
    path, meta = pool.get(spool_id)
    assert path == os.path.join(pool.directory, spool_id + '.img')
    assert meta == {'url': 'http://x/y.jpg', 'format': 'jpeg'}
    pool.remove(spool_id)
    with pytest.raises(SpoolNotFound, match='no such spooled file'):
        pool.get(spool_id)
    assert os.listdir(pool.directory) == []


@pytest.mark.parametrize('spool_id', [
    '../../etc/passwd', '', None, 'A' * 32, 'a' * 31, 'a' * 32 + '/',
    '/tmp/' + 'a' * 32, 5,
])
def test_invalid_ids_are_refused(pool, spool_id):
    with pytest.raises(SpoolNotFound, match='not a valid spool id') as info:
        pool.get(spool_id)
    assert info.value.server == 'srv1'


def test_expired_entry_is_not_found_and_deleted(pool):
    spool_id = _entry(pool)
    _age(pool, spool_id + '.json', 61)
    with pytest.raises(SpoolNotFound, match='expired after spool_ttl'):
        pool.get(spool_id)
    assert os.listdir(pool.directory) == []


def test_sweep_deletes_only_old_spool_files(pool):
    old, fresh = _entry(pool), _entry(pool)
    for name in (old + '.img', old + '.json'):
        _age(pool, name, 120)
    with open(os.path.join(pool.directory, '.part-crashed'), 'wb'):
        pass
    _age(pool, '.part-crashed', 120)
    with open(os.path.join(pool.directory, 'unrelated.txt'), 'wb'):
        pass
    _age(pool, 'unrelated.txt', 120)

    assert pool.sweep() == 3
    assert sorted(os.listdir(pool.directory)) == sorted(
        [fresh + '.img', fresh + '.json', 'unrelated.txt'])


def test_maybe_sweep_runs_once_per_interval(pool):
    assert pool.sweep_interval == 60
    spool_id = _entry(pool)
    pool.maybe_sweep(now=1000.0)            # due: sweeps (nothing old)
    _age(pool, spool_id + '.json', 120)
    assert pool.maybe_sweep(now=1001.0) == 0    # not due yet
    assert pool.maybe_sweep(now=1000.0 + 61) == 0  # due, but by that clock
    assert pool.maybe_sweep() == 1         # (far) later: the old meta goes
