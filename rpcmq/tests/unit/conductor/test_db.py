"""The conductor's batch store: a batch's life told step by step.

These scenarios run on SQLite here and on PostgreSQL in
``rpcmq/tests/functional/test_conductor_db_postgres.py``, which reuses them
with its own ``store_url`` fixture. Time is passed explicitly (``now=``).
"""

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine.default import CacheStats

from rpcmq.conductor import models
from rpcmq.conductor.db import BatchStore
from rpcmq.conductor.errors import BatchNotFound, InvalidBatch

T0 = 1000.0
LEASE = 60


def urls(count, prefix='http://images.test/'):
    return [{'url': f'{prefix}{i}.jpg'} for i in range(count)]


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


def check_counts(store):
    """Every batch's kept counts equal what its items say (after every
    scenario: the transitions keep them in step)."""
    import sqlalchemy as sa
    with store.engine.connect() as conn:
        counted = {(b, s): n for b, s, n in conn.execute(
            sa.select(models.items.c.batch_id, models.items.c.state,
                      sa.func.count()).group_by(models.items.c.batch_id,
                                                models.items.c.state))}
    for batch in store.list_batches(limit=10000):
        for state in models.TOTALS[1:]:
            assert batch['totals'][state] == counted.get(
                (batch['batch_id'], state), 0), (batch, state)


def totals(store, batch_id):
    return store.status(batch_id)['totals']


def in_all(store, state):
    """Items in ``state`` over all batches, read in one transaction."""
    return sum(b['totals'][state] for b in store.list_batches())


def claim(store, limit=100, batch_limit=None, now=T0):
    return store.claim(limit, batch_limit, now=now, lease_seconds=LEASE)


def test_submit_stores_items_once_per_batch_id(store):
    batch_id, created = store.submit(
        [{'url': 'http://a.test/1.jpg', 'key': 'cats/1.jpg', 'name': 'one'},
         'http://a.test/2.jpg'], batch_id='b-1', options={'tag': 'x'}, now=T0)
    assert (batch_id, created) == ('b-1', True)
    # The same items again (a retried submit): nothing added.
    assert store.submit(
        [{'url': 'http://a.test/1.jpg', 'key': 'cats/1.jpg', 'name': 'one'},
         'http://a.test/2.jpg'], batch_id='b-1') == ('b-1', False)

    status = store.status('b-1', with_items=True)
    assert status['totals'] == {'total': 2, 'pending': 2, 'running': 0,
                                'done': 0, 'failed': 0, 'cancelled': 0}
    assert status['state'] == 'pending'
    assert status['options'] == {'tag': 'x'}
    assert status['created_at'] == status['updated_at'] == T0
    assert [(i['idx'], i['key'], i['name']) for i in status['items']] == [
        (0, 'cats/1.jpg', 'one'), (1, None, None)]
    new_id, created = store.submit(urls(1))
    assert created and len(new_id) == 32


@pytest.mark.parametrize('items, batch_id, options, words', [
    ([], None, None, 'at least one item'),
    ('http://a.test/x.jpg', None, None, 'must be a list'),
    ([{'key': 'k'}], None, None, 'item 0 needs "url"'),
    ([{'url': 5}], None, None, 'item 0 needs "url"'),
    ([{'url': 'u'}, {'url': 'u', 'key': 3}], None, None, "item 1: 'key'"),
    ([{'url': 'u', 'size': 1}], None, None, "unknown field(s) 'size'"),
    ([{'url': 'u', 'key': '/abs'}], None, None, 'item 0'),
    ([{'url': 'u', 'key': 'k'}, {'url': 'v', 'key': 'k'}], None, None,
     'items 0 and 1 both use key'),
    (['u'], 'has space', None, "batch id 'has space'"),
    (['u'], None, ['not', 'a', 'dict'], 'options must be an object'),
])
def test_submit_rejects_malformed_batches(store, items, batch_id, options,
                                          words):
    with pytest.raises(InvalidBatch) as info:
        store.submit(items, batch_id=batch_id, options=options)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)
    assert store.list_batches() == []


def test_unknown_batch_is_reported_by_id(store):
    for call in (lambda: store.status('nope'),
                 lambda: store.cancel('nope'),
                 lambda: store.retry_failed('nope'),
                 lambda: store.mark_start_notified('nope'),
                 lambda: store.complete('nope', 0, 1, {}),
                 lambda: store.unnotified_items('nope')):
        with pytest.raises(BatchNotFound, match='nope'):
            call()


def test_an_existing_batch_id_with_other_items_is_refused(store):
    """Before, the second submit was silently answered with the old batch,
    and the new items were never run."""
    store.submit(urls(2), batch_id='b-2', now=T0)
    with pytest.raises(InvalidBatch) as refused:
        store.submit(urls(5), batch_id='b-2')
    text = str(refused.value)
    assert "batch id 'b-2' already exists with other items" in text
    assert '2 items' in text and '5' in text
    assert store.status('b-2')['totals']['total'] == 2


def test_claim_honours_windows_and_oldest_batch_first(store):
    old, _ = store.submit(urls(5), batch_id='old', now=T0)
    new, _ = store.submit(urls(5), batch_id='new', now=T0 + 1)

    now = T0 + 1
    first = claim(store, limit=4, batch_limit=3, now=now)
    assert [(r.batch_id, r.idx) for r in first] == [
        (old, 0), (old, 1), (old, 2), (new, 0)]
    assert all(r.state == 'running' and r.attempts == 1 for r in first)
    assert first[0].lease_until == now + LEASE
    assert claim(store, limit=4, batch_limit=3, now=now) == []

    assert store.complete(old, 0, 1, {'key': 'k0'})
    assert [(r.batch_id, r.idx) for r in claim(store, 4, 3, now)] == [(old, 3)]
    assert store.complete(new, 0, 1, {'key': 'n0'})
    assert [(r.batch_id, r.idx) for r in claim(store, 4, 3, now)] == [(new, 1)]
    assert store.status(old)['state'] == 'running'
    assert totals(store, old)['running'] == 3


def test_transitions_are_idempotent(store):
    batch_id, _ = store.submit(urls(3), now=T0)
    claim(store)
    assert store.record_fetched(batch_id, 0, 1, 'srv-a', 'spool-1')
    assert store.complete(batch_id, 0, 1, {'key': 'k', 'size': 3})
    assert not store.complete(batch_id, 0, 1, {'key': 'other'})
    assert not store.fail(batch_id, 0, 1, 'late', retry_at=T0)
    assert store.fail(batch_id, 1, 1, RuntimeError('boom'))
    assert not store.fail(batch_id, 1, 1, RuntimeError('boom'))
    assert totals(store, batch_id) == {'total': 3, 'pending': 0,
                                       'running': 1, 'done': 1, 'failed': 1,
                                       'cancelled': 0}
    assert store.status(batch_id)['state'] == 'running'
    done = store.get_item(batch_id, 0)
    assert (done.server, done.spool_id, done.result) == (
        'srv-a', 'spool-1', {'key': 'k', 'size': 3})
    assert store.get_item(batch_id, 1).error == {'type': 'RuntimeError',
                                                 'message': 'boom'}
    assert store.fail(batch_id, 2, 1, 'x' * 10_000)
    error = store.get_item(batch_id, 2).error
    assert error['type'] == 'Error'
    assert len(error['message']) == models.MAX_ERROR_CHARS


def test_many_completions_go_in_one_transaction(store):
    """The scheduler completes what finished since its last step at once:
    across batches, stale attempts and repeats ignored, counts kept, and a
    batch whose last item completes is done."""
    first, _ = store.submit(urls(3), batch_id='first', now=T0)
    second, _ = store.submit(urls(2), batch_id='second', now=T0 + 1)
    assert len(claim(store, now=T0 + 1)) == 5
    assert store.complete(first, 2, 1, {'key': 'early'})
    done = store.complete_many([
        (second, 0, 1, {'key': 's0'}),
        (first, 0, 1, {'key': 'f0'}),
        (first, 1, 7, {'key': 'stale attempt'}),
        (first, 2, 1, {'key': 'again'}),
        (second, 1, 1, {'key': 's1'}),
        (second, 1, 1, {'key': 'twice'}),
        ('gone', 0, 1, {'key': 'no such batch'}),
    ], now=T0 + 5)
    assert done == 3
    assert totals(store, first) == {'total': 3, 'pending': 0, 'running': 1,
                                    'done': 2, 'failed': 0, 'cancelled': 0}
    assert store.status(first)['state'] == 'running'
    assert store.status(second)['state'] == 'done'
    assert [o['result'] for o in store.outcomes(second)] == [
        {'key': 's0'}, {'key': 's1'}]
    assert store.get_item(first, 2).result == {'key': 'early'}
    assert store.get_item(first, 0).updated_at == T0 + 5
    assert store.complete_many([]) == 0


def test_a_step_completes_then_claims_the_room_it_freed(store):
    """One scheduler step is one transaction: the finished items are
    completed (stale attempts ignored) and the window they free is claimed
    at once."""
    batch_id, _ = store.submit(urls(5), now=T0)
    assert [i.idx for i in claim(store, limit=2)] == [0, 1]
    done, claimed = store.step([(batch_id, 0, 1, {'key': 'k0'}),
                                (batch_id, 1, 9, {'key': 'stale'})],
                               2, now=T0 + 1, lease_seconds=LEASE)
    assert done == 1
    assert [(i.idx, i.attempts, i.lease_until) for i in claimed] == [
        (2, 1, T0 + 1 + LEASE)]
    assert totals(store, batch_id) == {'total': 5, 'pending': 2,
                                       'running': 2, 'done': 1, 'failed': 0,
                                       'cancelled': 0}
    assert store.step([], 2, now=T0 + 2) == (0, [])  # the window is full


def test_steps_run_statements_sqlalchemy_compiled_before(store):
    """Compiling a statement costs a conductor about as much as the
    database takes to run it: after the first step of each kind, a step
    only runs statements from SQLAlchemy's cache."""
    batch_id, _ = store.submit(urls(40), now=T0)
    compiled = []

    @sa.event.listens_for(store.engine, 'after_cursor_execute')
    def record(conn, cursor, statement, params, context, executemany):
        if context.compiled is not None and \
                context.cache_hit is not CacheStats.CACHE_HIT:
            compiled.append(statement.split('\n')[0])

    running = list(store.step([], 4, now=T0 + 1, lease_seconds=LEASE)[1])
    for step in range(6):
        if step == 2:
            compiled.clear()  # each statement has run once by now
        finished, running = running[:2], running[2:]
        running += store.step(
            [(i.batch_id, i.idx, i.attempts, {'key': 'k%d' % i.idx})
             for i in finished], 4, now=T0 + 2 + step,
            lease_seconds=LEASE)[1]
    assert compiled == []
    assert totals(store, batch_id)['done'] == 12


def test_retry_waits_for_next_attempt_at(store):
    batch_id, _ = store.submit(urls(1), now=T0)
    claim(store)
    assert store.fail(batch_id, 0, 1, {'type': 'HTTPError', 'message': '503'},
                      retry_at=T0 + 4)
    item = store.get_item(batch_id, 0)
    assert (item.state, item.attempts, item.next_attempt_at) == (
        'pending', 1, T0 + 4)
    assert claim(store, now=T0 + 3) == []
    [again] = claim(store, now=T0 + 4)
    assert again.attempts == 2
    assert again.error == {'type': 'HTTPError', 'message': '503'}
    assert store.complete(batch_id, 0, 2, {'key': 'k'})
    assert store.get_item(batch_id, 0).error is None


def test_stale_attempt_is_ignored_after_reclaim(store):
    batch_id, _ = store.submit(urls(1), now=T0)
    claim(store)
    [expired] = store.expire_leases(now=T0 + LEASE + 1, max_attempts=3)
    assert expired.state == 'pending'
    assert expired.error['type'] == 'LeaseExpired'
    [second] = claim(store, now=T0 + LEASE + 1)
    assert second.attempts == 2
    assert not store.record_fetched(batch_id, 0, 1, 'srv-old', 'spool-old')
    assert not store.complete(batch_id, 0, 1, {'key': 'stale'})
    assert store.complete(batch_id, 0, 2, {'key': 'fresh'})
    assert store.get_item(batch_id, 0).result == {'key': 'fresh'}


def test_expire_leases_requeues_or_fails_for_good(store):
    batch_id, _ = store.submit(urls(3), now=T0)
    claim(store)
    # Item 2 got a longer lease for its store step.
    assert store.record_fetched(batch_id, 2, 1, 'srv', 'sp',
                                lease_until=T0 + 10 * LEASE)
    assert store.expire_leases(now=T0 + LEASE) == []
    expired = store.expire_leases(now=T0 + LEASE + 1, max_attempts=1)
    assert [(r.idx, r.state) for r in expired] == [(0, 'failed'),
                                                   (1, 'failed')]
    assert 'attempt 1' in expired[0].error['message']
    assert store.get_item(batch_id, 2).state == 'running'
    assert store.expire_leases(now=T0 + LEASE + 1, max_attempts=1) == []


def test_recover_after_crash_keeps_items_and_keys(store, store_url):
    batch_id, _ = store.submit(
        [{'url': 'http://a.test/0.jpg'},
         {'url': 'http://a.test/1.jpg', 'key': 'fixed/1.jpg'},
         {'url': 'http://a.test/2.jpg', 'name': 'two'}],
        batch_id='crash', now=T0)
    claim(store, limit=2)
    assert store.complete(batch_id, 0, 1, {'key': 'k0'})
    store.close()  # the process dies: nothing else is written

    restarted = BatchStore(store_url)
    restarted.upgrade()
    [back] = restarted.recover(now=T0 + 5)
    assert (back.idx, back.state, back.attempts) == (1, 'pending', 1)
    assert restarted.recover(now=T0 + 5) == []
    assert [b['batch_id'] for b in restarted.unfinished_batches()] == [
        'crash']
    assert [(r.idx, r.attempts) for r in claim(restarted, now=T0 + 5)] == [
        (1, 2), (2, 1)]
    assert not restarted.complete(batch_id, 1, 1, {'key': 'lost reply'})
    assert restarted.get_item(batch_id, 1).key == 'fixed/1.jpg'
    assert restarted.get_item(batch_id, 2).name == 'two'
    assert totals(restarted, batch_id)['done'] == 1
    restarted.close()


def test_notifications_are_recorded_exactly_once(store):
    batch_id, _ = store.submit(urls(2), now=T0)
    assert store.mark_start_notified(batch_id)
    assert not store.mark_start_notified(batch_id)
    claim(store)
    assert store.unnotified_items() == []
    assert not store.mark_item_notified(batch_id, 0)  # still running

    store.complete(batch_id, 0, 1, {'key': 'k'})
    store.fail(batch_id, 1, 1, 'gone')
    assert [(r.idx, r.state) for r in store.unnotified_items(batch_id)] == [
        (0, 'done'), (1, 'failed')]
    assert store.mark_item_notified(batch_id, 0)
    assert not store.mark_item_notified(batch_id, 0)
    assert store.finished_batches_to_end() == []  # item 1 not announced
    assert store.finished_batches_to_end(require_items_notified=False)
    assert store.mark_item_notified(batch_id, 1)
    assert store.unnotified_items(limit=10) == []

    [ended] = store.finished_batches_to_end()
    assert ended['batch_id'] == batch_id
    assert ended['state'] == 'done_with_failures'
    assert ended['totals']['done'] == ended['totals']['failed'] == 1
    assert store.mark_end_notified(batch_id)
    assert not store.mark_end_notified(batch_id)
    assert store.finished_batches_to_end() == []
    assert store.unfinished_batches() == []


def test_cancel_stops_pending_items_and_counts_running_ones(store):
    batch_id, _ = store.submit(urls(4), now=T0)
    claim(store, limit=2)
    assert store.cancel(batch_id, now=T0 + 1) == {
        'total': 4, 'pending': 0, 'running': 2, 'done': 0, 'failed': 0,
        'cancelled': 2}
    assert claim(store, now=T0 + 2) == []
    assert store.finished_batches_to_end(require_items_notified=False) == []
    assert store.complete(batch_id, 0, 1, {'key': 'k'})
    # A retry would be pointless now: the item is cancelled instead.
    assert store.fail(batch_id, 1, 1, 'flaky', retry_at=T0 + 3)
    status = store.status(batch_id)
    assert status['state'] == 'cancelled'
    assert status['totals']['done'] == 1 and status['totals']['cancelled'] == 3
    [ended] = store.finished_batches_to_end(require_items_notified=False)
    assert ended['batch_id'] == batch_id
    assert store.cancel(batch_id)['cancelled'] == 3


def test_retry_failed_runs_failed_items_again(store):
    batch_id, _ = store.submit(urls(2), now=T0)
    claim(store)
    store.complete(batch_id, 0, 1, {'key': 'k'})
    store.fail(batch_id, 1, 1, 'broken')
    for row in store.unnotified_items():
        store.mark_item_notified(row.batch_id, row.idx)
    store.mark_end_notified(batch_id)
    assert store.status(batch_id)['state'] == 'done_with_failures'

    assert store.retry_failed(batch_id, now=T0 + 9) == 1
    assert store.retry_failed(batch_id, now=T0 + 9) == 0
    status = store.status(batch_id)
    assert (status['state'], status['end_notified']) == ('running', False)
    assert status['totals']['pending'] == 1
    [again] = claim(store, now=T0 + 9)
    # The attempt number goes on (it fences late replies); the retry
    # budget starts again.
    assert (again.idx, again.attempts, again.tries) == (1, 2, 1)
    assert store.complete(batch_id, 1, 2, {'key': 'k1'})
    assert [r.idx for r in store.unnotified_items()] == [1]


def test_a_late_reply_of_an_attempt_before_retry_is_ignored(store):
    """Attempt 1 fails for good, the user retries the batch, attempt 2
    runs; then the reply of attempt 1 (stuck in a slow server) arrives. It
    must not complete attempt 2: only attempt 2's own outcome counts."""
    batch_id, _ = store.submit(urls(1), now=T0)
    [first] = claim(store)
    assert store.fail(batch_id, 0, first.attempts, 'timed out')
    assert store.retry_failed(batch_id, now=T0 + 5) == 1
    [second] = claim(store, now=T0 + 5)
    assert second.attempts > first.attempts

    assert not store.complete(batch_id, 0, first.attempts, {'key': 'late'})
    assert not store.record_fetched(batch_id, 0, first.attempts, 'old',
                                    'spool-old')
    assert store.get_item(batch_id, 0).state == 'running'
    assert store.complete(batch_id, 0, second.attempts, {'key': 'k0'})
    assert store.get_item(batch_id, 0).result == {'key': 'k0'}


def test_list_batches_newest_first(store):
    for n in range(3):
        store.submit(urls(1), batch_id=f'b{n}', now=T0 + n)
    store.cancel('b1')
    assert [b['batch_id'] for b in store.list_batches()] == ['b2', 'b1', 'b0']
    assert [b['batch_id'] for b in store.list_batches(limit=1)] == ['b2']
    assert [b['batch_id'] for b in store.list_batches(state='cancelled')] == [
        'b1']
    assert [b['batch_id'] for b in store.unfinished_batches()] == [
        'b0', 'b1', 'b2']
    with pytest.raises(InvalidBatch, match="unknown batch state 'over'"):
        store.list_batches(state='over')


def test_submit_of_ten_thousand_items(store):
    batch_id, _ = store.submit(urls(10_000), now=T0)
    assert totals(store, batch_id)['pending'] == 10_000
    rows = claim(store, limit=500, batch_limit=500)
    assert [r.idx for r in rows] == list(range(500))
    assert len(store.status(batch_id, with_items=True)['items']) == 10_000


def test_concurrent_claimers_never_share_an_item(store, store_url):
    store.submit(urls(60), batch_id='a', now=T0)
    store.submit(urls(60), batch_id='b', now=T0 + 1)
    other = BatchStore(store_url)  # a second conductor on the same database
    seen, errors, lock = [], [], threading.Lock()

    def worker(store):
        try:
            for _ in range(200):
                rows = claim(store, limit=8, batch_limit=5, now=T0 + 2)
                assert len(rows) <= 8 and in_all(store, 'running') <= 8
                with lock:
                    seen.extend((r.batch_id, r.idx) for r in rows)
                for row in rows:
                    assert store.complete(row.batch_id, row.idx, 1, {})
                if not rows and in_all(store, 'pending') == 0:
                    return
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,))
               for s in (store, other, store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    other.close()
    assert errors == []
    assert len(seen) == len(set(seen)) == 120
    assert all(totals(store, b)['done'] == 60 for b in 'ab')


def test_sqlite_file_uses_wal(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql('PRAGMA journal_mode').scalar() == 'wal'


def test_outcomes_are_read_a_page_at_a_time(store):
    bid, _ = store.submit(['http://h/%d.jpg' % i for i in range(25)])
    page = store.outcomes(bid, offset=10, limit=5)
    assert [o['idx'] for o in page] == [10, 11, 12, 13, 14]
    assert page[0]['url'] == 'http://h/10.jpg'
    assert len(store.outcomes(bid)) == 25
    assert store.outcomes(bid, states=('failed',)) == []
    with pytest.raises(BatchNotFound):
        store.outcomes('no-such-batch')


def test_reads_do_not_wait_for_a_writer(store):
    """batch status while another transaction holds SQLite's write lock
    (a claim, a completion): it used to queue behind it (every transaction
    began IMMEDIATE), so status took as long as the busiest writer."""
    batch_id, _ = store.submit(urls(3), now=T0)
    writing, done = threading.Event(), threading.Event()

    def writer():
        with store.transaction() as conn:
            conn.execute(models.batches.update().where(
                models.batches.c.id == batch_id).values(updated_at=T0 + 1))
            writing.set()
            done.wait(10)  # holds the write lock until the read is done
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        started = time.monotonic()
        assert store.status(batch_id)['totals']['total'] == 3
        assert store.get_item(batch_id, 2).state == 'pending'
        took = time.monotonic() - started
    finally:
        done.set()
        thread.join(10)
    assert took < 5, 'the reads waited %.1fs for the writer' % took


def test_reads_do_not_queue_for_the_writers_connections(store):
    """Busy writers (32 items completing at once) held every pooled
    connection, and batch status waited in the pool for one: tens to
    hundreds of milliseconds while a batch ran, up to the pool timeout.
    Reads have connections of their own."""
    batch_id, _ = store.submit(urls(2), now=T0)
    pool = store.engine.pool
    held = []
    try:
        # Every connection the writers' pool will give.
        for _ in range(pool.size() + max(getattr(pool, '_max_overflow', 0),
                                         0)):
            held.append(pool.connect())
        started = time.monotonic()
        assert store.status(batch_id)['totals']['total'] == 2
        assert [b['batch_id'] for b in store.list_batches()] == [batch_id]
        took = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
    assert took < 5, 'the reads waited %.1fs for a connection' % took


def test_a_batch_with_failures_is_told_apart_from_a_clean_one(store):
    """Both used to say 'done'; readers had to look at the totals."""
    clean, _ = store.submit(urls(1), now=T0)
    mixed, _ = store.submit(urls(2, 'http://mixed.test/'), now=T0 + 1)
    for row in claim(store, now=T0 + 2):
        if row.batch_id == mixed and row.idx == 1:
            store.fail(mixed, 1, 1, 'broken')
        else:
            store.complete(row.batch_id, row.idx, 1, {'key': 'k'})
    assert store.status(clean)['state'] == 'done'
    assert store.status(mixed)['state'] == 'done_with_failures'
    assert [b['batch_id'] for b in store.list_batches(state='done')] == [
        clean]
    assert [b['batch_id'] for b in
            store.list_batches(state='done_with_failures')] == [mixed]
    with pytest.raises(InvalidBatch, match='done_with_failures'):
        store.list_batches(state='finished')
