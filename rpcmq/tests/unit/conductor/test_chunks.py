"""A batch too large for one message, submitted in chunks: opened, filled,
sealed; resumed after an interruption; refused when the pieces do not add
up. (On PostgreSQL through functional/test_conductor_db_postgres.py.)"""

import pytest

from rpcmq.conductor.db import BatchStore
from rpcmq.conductor.errors import InvalidBatch
from rpcmq.conductor.validation import items_digest, validate_items
from rpcmq.tests.unit.conductor.test_db import T0, check_counts, claim, urls

N = 10


@pytest.fixture
def store_url(tmp_path):
    return f'sqlite:///{tmp_path}/state/conductor.sqlite'


@pytest.fixture
def store(store_url):
    store = BatchStore(store_url)
    store.upgrade()
    yield store
    check_counts(store)
    store.close()


def chunked(count, size):
    items = urls(count)
    return items, items_digest(validate_items(items)), [
        (start, items[start:start + size]) for start in range(0, count, size)]


def test_a_batch_is_opened_filled_in_chunks_and_runs_once_sealed(store):
    items, digest, chunks = chunked(N, 4)
    assert store.create('big', N, digest, now=T0)
    for offset, chunk in chunks:
        assert store.add_items('big', offset, chunk, now=T0) == len(chunk)
    # Open: nothing runs, no batch.start, no batch.end.
    assert store.status('big')['state'] == 'open'
    assert claim(store) == []
    assert store.batches_to_start() == []
    assert store.finished_batches_to_end() == []

    assert store.seal('big', now=T0)
    assert store.status('big')['state'] == 'pending'
    assert store.batches_to_start() == [('big', N)]
    assert len(claim(store)) == N
    assert store.get_item('big', 9).url == items[9]['url']


def test_an_interrupted_submit_resumes_with_the_same_batch_id(store):
    items, digest, chunks = chunked(N, 4)
    store.create('resume', N, digest, now=T0)
    store.add_items('resume', *chunks[0], now=T0)
    # The client died here; the same command runs again.
    assert not store.create('resume', N, digest, now=T0)
    assert [store.add_items('resume', o, c, now=T0) for o, c in chunks] \
        == [0, 4, 2]
    assert store.seal('resume', now=T0)
    assert not store.seal('resume', now=T0)          # sealed once
    assert store.add_items('resume', *chunks[1]) == 0  # nothing new: fine
    assert store.status('resume')['totals']['total'] == N


def test_pieces_that_do_not_add_up_are_refused(store):
    items, digest, chunks = chunked(N, 5)
    store.create('b', N, digest, now=T0)
    store.add_items('b', *chunks[0], now=T0)
    with pytest.raises(InvalidBatch, match='has 5 of its 10 items'):
        store.seal('b')
    with pytest.raises(InvalidBatch, match='do not fit'):
        store.add_items('b', 8, urls(3))
    with pytest.raises(InvalidBatch, match='item 0 of batch .* other'):
        store.add_items('b', 0, urls(1, prefix='http://other.test/'))
    with pytest.raises(InvalidBatch, match='already exists with other'):
        store.create('b', N + 1, digest)
    # Items that differ from the announced digest never run.
    store.add_items('b', 5, urls(5, prefix='http://else.test/'))
    with pytest.raises(InvalidBatch, match='do not match the digest'):
        store.seal('b')
    assert store.status('b')['state'] == 'open'


def test_a_key_used_in_two_chunks_is_refused_at_seal(store):
    items = [{'url': 'http://a.test/1.jpg', 'key': 'same'},
             {'url': 'http://a.test/2.jpg', 'key': 'same'}]
    digest = items_digest([dict(i, name=None) for i in items])
    store.create('keys', 2, digest)
    store.add_items('keys', 0, items[:1])
    store.add_items('keys', 1, items[1:])
    with pytest.raises(InvalidBatch, match="key 'same' for more than one"):
        store.seal('keys')


def test_errors_name_the_item_by_its_place_in_the_batch(store):
    store.create('named', 3, '0' * 64)
    with pytest.raises(InvalidBatch, match='item 2 needs "url"'):
        store.add_items('named', 2, [{'url': ''}])
