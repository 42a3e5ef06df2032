"""Batches through the conductor and two image servers, on memory://."""

import contextlib
import hashlib
import io
import logging
import os
import sqlite3
import threading
import time

import pytest
from rich.console import Console

from rpcmq import RPCClient, Target
from rpcmq.cmd.progress import BatchWatcher, print_report
from rpcmq.conductor import engine
from rpcmq.conductor import scheduler as scheduler_mod
from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.members import Membership
from rpcmq.conductor.service import ConductorService
from rpcmq.endpoints.image import ImageEndpoint
from rpcmq.notify import get_notification_listener
from rpcmq.storage.errors import StorageUnavailable
from rpcmq.testing.imageserver import make_image
from rpcmq.testing.pipeline import Pipeline


class Events:
    def __init__(self):
        self.log = []
        self._changed = threading.Condition()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self._changed:
            self.log.append((event_type, payload))
            self._changed.notify_all()

    def of(self, event_type, batch_id):
        with self._changed:
            return [p for t, p in self.log
                    if t == event_type and p['batch_id'] == batch_id]

    def wait_for(self, event_type, batch_id, timeout):
        """The first ``event_type`` event of ``batch_id``; None if none
        came within ``timeout`` seconds."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: self.of(event_type, batch_id), timeout)
        return found[0] if found else None


class FetchGate:
    """The image servers' fetches pass here. While it is closed, a fetch
    the server took waits; ``taken`` and ``answered`` tell which did what.
    """

    def __init__(self):
        self.taken = []      # (host, idx) of each fetch a server took
        self.answered = []   # (host, idx) of each fetch a server answered
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()

    def close(self):
        self._open.clear()

    def open(self):
        self._open.set()

    def passing(self, host, idx):
        with self._changed:
            self.taken.append((host, idx))
            self._changed.notify_all()
        assert self._open.wait(60), 'fetch %s/%s held for good' % (host, idx)

    def answer(self, host, idx):
        with self._changed:
            self.answered.append((host, idx))

    def wait_taken(self, until, timeout=30):
        """Wait until ``until(taken)`` is true."""
        with self._changed:
            assert self._changed.wait_for(lambda: until(self.taken),
                                          timeout), self.taken


class GatedEndpoint(ImageEndpoint):

    def __init__(self, conf, gate):
        super().__init__(conf)
        self.gate = gate

    def fetch(self, ctxt, url):
        self.gate.passing(self.conf.host, ctxt.get('idx'))
        handle = super().fetch(ctxt, url)
        self.gate.answer(self.conf.host, ctxt.get('idx'))
        return handle

    def transfer(self, ctxt, url, **kwargs):
        self.gate.passing(self.conf.host, ctxt.get('idx'))
        result = super().transfer(ctxt, url, **kwargs)
        self.gate.answer(self.conf.host, ctxt.get('idx'))
        return result


class ImageOneOne(GatedEndpoint):
    """An image server from before image 1.2 (no one-call transfer)."""

    target = Target(namespace='image', version='1.1')


class GatedPipeline(Pipeline):
    """A Pipeline whose image servers' fetches go through ``self.gate``."""

    def __init__(self, *args, endpoint=GatedEndpoint, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = FetchGate()
        self.endpoint = endpoint

    def make_endpoint(self, host):
        return self.endpoint(self.make_conf(host), self.gate)

    def stop(self):
        self.gate.open()  # a failed test may have left fetches held
        super().stop()


@pytest.fixture
def pipeline(tmp_path):
    with GatedPipeline(str(tmp_path)) as p, listening(p):
        yield p


@contextlib.contextmanager
def listening(p):
    """Record the batch events of pipeline ``p`` in ``p.events``."""
    p.events = Events()
    listener = get_notification_listener(
        p.transport, [Target(topic='batch.*')], [p.events])
    listener.start()
    try:
        yield p
    finally:
        listener.stop()
        listener.wait(5)


def wait_end(p, batch_id, timeout=60):
    end = p.events.wait_for('batch.end', batch_id, timeout)
    assert end is not None, 'no batch.end for %s: %s' % (
        batch_id, p.api.status(batch_id))
    return end


def wait_done(p, batch_id, timeout=60, check=None):
    """Poll the batch's status until it is done; ``check(totals)`` each
    time."""
    deadline = time.monotonic() + timeout
    while True:
        status = p.api.status(batch_id)
        if check is not None:
            check(status['totals'])
        if status['state'] == 'done':
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def test_a_batch_is_stored_and_reported(pipeline):
    p = pipeline
    good = [{'url': p.images.url('/img/p%d.jpg?kb=10' % i)} for i in range(20)]
    named = {'url': p.images.url('/img/named.png'), 'name': 'cats/tom'}
    bad = [{'url': p.images.url('/status/404')},
           {'url': p.images.url('/html')}]
    # Which server takes a fetch is the broker's choice: the fetches wait
    # until both servers have taken one. A server takes at most 17 while
    # they wait (16 running on its executor_thread_pool_size threads, one
    # waiting for a thread), so of the 23 the other one gets some.
    p.gate.close()
    batch_id = p.api.submit(good + [named] + bad)
    p.gate.wait_taken(lambda taken: len({h for h, _ in taken}) == 2)
    p.gate.open()
    end = wait_end(p, batch_id)
    assert end['totals'] == {'total': 23, 'pending': 0, 'running': 0,
                             'done': 21, 'failed': 2, 'cancelled': 0}
    assert len(p.events.of('batch.start', batch_id)) == 1
    items = {i['idx']: i for i in p.events.of('batch.item', batch_id)}
    assert sorted(items) == list(range(23))
    # Every stored object exists, once, in the file store.
    stored = sorted(os.listdir(p.store_dir))
    keys = [i['result']['key'] for i in end['items'] if i['state'] == 'done']
    assert 'cats/tom.png' in keys
    assert len(set(keys)) == 21
    assert os.path.exists(os.path.join(p.store_dir, 'cats', 'tom.png'))
    assert len([k for k in stored if k.endswith('.jpg')]) == 20
    # Failures name their cause; a 404 is not retried.
    errors = {i['url'].rsplit('/', 1)[1]: i['error'] for i in end['items']
              if i['state'] == 'failed'}
    assert errors['404']['type'] == 'DownloadFailed'
    assert errors['html']['type'] == 'NotAnImage'
    assert p.images.count('/status/404') == 1
    # Both servers worked.
    servers = {i['result']['server'] for i in end['items'] if i['result']}
    assert servers == {'demo-1', 'demo-2'}


def test_resubmitting_a_batch_id_adds_nothing(pipeline):
    p = pipeline
    items = [{'url': p.images.url('/img/r%d.jpg' % i)} for i in range(5)]
    assert p.api.submit(items, batch_id='task-1') == 'task-1'
    assert p.api.submit(items, batch_id='task-1') == 'task-1'
    with pytest.raises(InvalidBatch, match='already exists with other'):
        p.api.submit(items + items, batch_id='task-1')
    end = wait_end(p, 'task-1')
    assert end['totals']['total'] == 5 and end['totals']['done'] == 5
    assert sum(p.images.count('/img/r%d.jpg' % i) for i in range(5)) == 5


def test_a_batch_in_chunks_runs_once_sealed_and_resumes(pipeline):
    """A batch sent as chunks of 3 (as a million-item batch goes in chunks
    under max_message_size): it runs once sealed, and submitting it again
    with the same id (the client was interrupted) adds nothing."""
    p = pipeline
    items = [{'url': p.images.url('/img/c%d.jpg' % i)} for i in range(10)]
    seen = []
    batch_id = p.api.submit_chunked(
        items, batch_id='chunky', chunk_items=3,
        progress=lambda sent, total: seen.append((sent, total)))
    assert batch_id == 'chunky'
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert p.api.submit_chunked(items, batch_id='chunky',
                                chunk_items=4) == 'chunky'
    end = wait_end(p, 'chunky')
    assert end['totals']['total'] == 10 and end['totals']['done'] == 10
    assert sum(p.images.count('/img/c%d.jpg' % i) for i in range(10)) == 10
    assert len(p.events.of('batch.start', 'chunky')) == 1
    with pytest.raises(InvalidBatch, match='already exists with other'):
        p.api.submit_chunked(items[:5], batch_id='chunky')


def test_items_keep_running_while_events_cannot_be_sent(pipeline):
    """A broker that cannot take the batch events (a cluster failover, a
    full disk) must not stop the conductor: before, events were sent on
    the scheduler's own thread, so claims, lease expiry and everything
    else waited for each one (up to its 30 s deadline)."""
    p = pipeline
    scheduler = p.conductor.scheduler
    held = threading.Event()
    release = threading.Event()
    send = scheduler.notifier.notify_many

    def stuck(*args, **kwargs):
        held.set()
        assert release.wait(60)
        return send(*args, **kwargs)
    scheduler.notifier.notify_many = stuck
    try:
        # More items than one claim takes (max_inflight_per_batch 32).
        items = [{'url': p.images.url('/img/ev%d.jpg' % i)}
                 for i in range(80)]
        batch_id = p.api.submit(items)
        assert held.wait(30)  # batch.start is stuck in the broker
        deadline = time.monotonic() + 60
        while p.api.status(batch_id)['totals']['done'] < 80:
            assert time.monotonic() < deadline, p.api.status(batch_id)
            time.sleep(0.05)
        assert p.events.of('batch.end', batch_id) == []
    finally:
        release.set()
    end = wait_end(p, batch_id)
    assert end['totals']['done'] == 80
    assert len(p.events.of('batch.item', batch_id)) == 80


class UnconfirmedBroker:
    """Wraps a notifier's ``notify_many``: the events go out, but their
    receipts say the broker confirmed nothing until ``confirm()``; counts
    the receipts' waits."""

    def __init__(self, notify_many):
        self.notify_many = notify_many
        self.waits = 0
        self._confirmed = threading.Event()
        self._changed = threading.Condition()

    def send(self, *args, **kwargs):
        self.notify_many(*args, **kwargs)
        return self

    def wait(self, timeout=None):
        with self._changed:
            self.waits += 1
            self._changed.notify_all()
        return self._confirmed.is_set()

    def confirm(self):
        self._confirmed.set()

    def wait_for_waits(self, n, timeout=30):
        with self._changed:
            assert self._changed.wait_for(lambda: self.waits >= n, timeout)


def test_events_are_recorded_sent_once_the_broker_took_them(pipeline):
    """Until the broker confirms a round of events, they stay unsent in
    the database (a crash sends them again) and nothing else is sent: the
    publisher sends the refused ones again itself, so sending them once
    more every round would only pile up copies."""
    p = pipeline
    scheduler = p.conductor.scheduler
    broker = UnconfirmedBroker(scheduler.notifier.notify_many)
    scheduler.notifier.notify_many = broker.send
    scheduler.confirm_wait = 0.01
    batch_id = p.api.submit([{'url': p.images.url('/img/unc%d.jpg' % i)}
                             for i in range(3)])
    wait_done(p, batch_id)
    start = broker.waits
    broker.wait_for_waits(start + 3)  # three more rounds: none sent more
    assert len(p.events.of('batch.start', batch_id)) == 1
    assert p.events.of('batch.item', batch_id) == []
    assert p.events.of('batch.end', batch_id) == []
    assert p.conductor.store.batches_to_start() == [(batch_id, 3)]
    broker.confirm()
    end = wait_end(p, batch_id)
    assert end['totals']['done'] == 3
    assert len(p.events.of('batch.start', batch_id)) == 1
    assert sorted(e['idx'] for e in p.events.of('batch.item', batch_id)) \
        == [0, 1, 2]
    assert p.conductor.store.unnotified_items(batch_id) == []


def test_transient_failures_are_retried(pipeline):
    p = pipeline
    url = p.images.url('/flaky/f.jpg?fail=2')  # two 500s, then the image
    batch_id = p.api.submit([{'url': url}])
    end = wait_end(p, batch_id)
    assert end['totals']['done'] == 1
    assert p.images.count('/flaky/f.jpg') == 3


def test_a_server_that_leaves_finishes_the_transfers_it_took(tmp_path):
    """One call per item: the server that took an item downloads and
    stores it, so a server stopping gracefully answers what it took and
    nothing runs twice (with fetch, then a store pinned to the server,
    those stores timed out and every item ran again elsewhere)."""
    with GatedPipeline(str(tmp_path), **{
            'conductor.fetch_timeout': 30, 'conductor.store_timeout': 2,
            'conductor.retry_backoff': 0.05}) as p:
        p.stop_server('demo-1')
        p.gate.close()
        items = [{'url': p.images.url('/img/t%d.jpg' % i)} for i in range(8)]
        batch_id = p.api.submit(items)
        p.gate.wait_taken(lambda taken: len(taken) == 8)
        p.start_server('demo-1')
        p.stop_server('demo-2', when_stopped=p.gate.open)
        status = wait_done(p, batch_id)
        assert status['totals']['done'] == 8
        status = p.api.status(batch_id, items=True)
        assert [i['attempts'] for i in status['items']] == [1] * 8
        assert {i['result']['server'] for i in status['items']} == {'demo-2'}
        assert sum(p.images.count('/img/t%d.jpg' % i) for i in range(8)) == 8


class FlakyStore(GatedEndpoint):
    """The first upload of each key fails as an unreachable store would."""

    failed = set()

    def _put(self, path, meta, key, *args):
        if key not in self.failed:
            self.failed.add(key)
            raise StorageUnavailable(reason='connection reset by the store')
        return super()._put(path, meta, key, *args)


def test_a_failed_upload_is_retried_from_the_kept_copy(tmp_path):
    """One call downloads and uploads; when the upload fails, the server
    keeps the download and the retry stores that copy: nothing is
    downloaded twice."""
    FlakyStore.failed = set()
    with GatedPipeline(str(tmp_path), endpoint=FlakyStore, **{
            'conductor.retry_backoff': 0.05}) as p:
        items = [{'url': p.images.url('/img/k%d.jpg' % i), 'key': 'k/%d' % i}
                 for i in range(4)]
        batch_id = p.api.submit(items)
        status = wait_done(p, batch_id)
        assert status['totals']['done'] == 4
        status = p.api.status(batch_id, items=True)
        assert [i['attempts'] for i in status['items']] == [2] * 4
        assert sum(p.images.count('/img/k%d.jpg' % i) for i in range(4)) == 4


def test_items_of_an_older_server_that_went_away_run_elsewhere(tmp_path):
    """Image servers before 1.2: the conductor falls back to fetch, then
    store pinned to the fetching server."""
    # fetch_timeout is ample: only the stores sent to the server that
    # left are to time out (after store_timeout).
    with GatedPipeline(str(tmp_path), endpoint=ImageOneOne, **{
            'conductor.fetch_timeout': 30, 'conductor.store_timeout': 2,
            'conductor.retry_backoff': 0.05}) as p:
        p.stop_server('demo-1')  # demo-2 alone takes the batch's fetches
        p.gate.close()
        items = [{'url': p.images.url('/img/d%d.jpg' % i)} for i in range(8)]
        batch_id = p.api.submit(items)
        p.gate.wait_taken(lambda taken: len(taken) == 8)
        p.start_server('demo-1')
        # demo-2 leaves. Only once it takes no more messages do the fetches
        # it holds go on: their answers come back, and the stores the
        # conductor then pins to demo-2 can only time out.
        p.stop_server('demo-2', when_stopped=p.gate.open)
        assert sorted(i for h, i in p.gate.answered if h == 'demo-2') == \
            list(range(8))
        status = wait_done(p, batch_id)
        assert status['totals']['done'] == 8
        # Every store pinned to demo-2 timed out; each item ran again on
        # demo-1 (fetched again: after a timeout its copy counts as lost).
        status = p.api.status(batch_id, items=True)
        assert [i['attempts'] for i in status['items']] == [2] * 8
        assert {i['result']['server'] for i in status['items']} == {'demo-1'}
        assert sorted(p.gate.answered) == sorted(
            [('demo-1', i) for i in range(8)] +
            [('demo-2', i) for i in range(8)])


def test_an_item_fetched_before_a_conductor_crash_is_stored_whole(pipeline):
    """The conductor died between image.fetch and image.store: the next one
    stores the spooled copy under the same key and still reports what the
    content is, though it never saw the fetch's answer."""
    p = pipeline
    p.conductor.stop()
    p.conductor.wait(30)
    dead = ConductorService(p.conf, p.transport)  # its database, not running
    url = p.images.url('/img/resumed.png')
    batch_id, _ = dead.store.submit([{'url': url, 'name': 'cats/resumed'}])
    [item] = dead.store.claim(10)
    images = RPCClient(p.transport, Target(topic='image', namespace='image',
                                           version='1.1'), timeout=10)
    handle = images.call({}, 'fetch', url=url)
    dead.store.record_fetched(batch_id, 0, item.attempts, handle['server'],
                              handle['spool_id'])
    dead.store.close()

    p.conductor = ConductorService(p.conf, p.transport)
    p.conductor.start()
    end = wait_end(p, batch_id)

    assert end['totals']['done'] == 1
    [outcome] = end['items']
    body = make_image('png', 'resumed')
    result = outcome['result']
    assert result['key'] == 'cats/resumed.png'
    assert result['server'] == handle['server']
    assert result['sha256'] == hashlib.sha256(body).hexdigest()
    assert (result['format'], result['size']) == ('png', len(body))
    with open(os.path.join(p.store_dir, 'cats', 'resumed.png'), 'rb') as f:
        assert f.read() == body
    assert p.images.count('/img/resumed.png') == 1  # not downloaded again


def test_user_errors_reach_the_caller_typed(pipeline):
    p = pipeline
    with pytest.raises(BatchNotFound) as err:
        p.api.status('no-such-batch')
    assert 'no-such-batch' in str(err.value)
    with pytest.raises(InvalidBatch):
        p.api.submit([{'name': 'no url'}])
    with pytest.raises(InvalidBatch):
        p.api.submit([])


def test_cancel_and_retry(pipeline):
    p = pipeline
    # No fetch ends before the cancel: at most max_inflight_per_batch (32)
    # of the 40 items run, the others are still pending.
    p.gate.close()
    batch_id = p.api.submit([{'url': p.images.url('/img/s%d.jpg' % i)}
                             for i in range(40)])
    totals = p.api.cancel(batch_id)
    p.gate.open()
    assert totals['cancelled'] >= 8
    end = wait_end(p, batch_id)
    assert end['totals']['pending'] == 0
    assert end['totals']['cancelled'] + end['totals']['done'] == 40

    bad = p.api.submit([{'url': p.images.url('/status/404')}])
    wait_end(p, bad)
    assert p.images.count('/status/404') == 1
    assert p.api.retry(bad)['retried'] == 1
    # The failed item runs again (and fails again: it is still a 404).
    deadline = time.monotonic() + 30
    while p.images.count('/status/404') < 2 or \
            p.api.status(bad)['totals']['failed'] != 1:
        assert time.monotonic() < deadline, p.api.status(bad)
        time.sleep(0.05)


def test_the_window_fills_up_to_max_inflight(tmp_path):
    with GatedPipeline(str(tmp_path), **{
            'conductor.max_inflight': 6,
            'conductor.max_inflight_per_batch': 6,
            'executor_thread_pool_size': 8}) as p:
        p.gate.close()  # no item ends until 6 run
        batch_id = p.api.submit([{'url': p.images.url(
            '/slow/w%d.jpg?delay=0.1&chunks=4' % i)} for i in range(30)])
        p.gate.wait_taken(lambda taken: len(taken) >= 6)
        totals = p.api.status(batch_id)['totals']
        assert (totals['running'], totals['pending']) == (6, 24)
        p.gate.open()

        def at_most_6(totals):
            assert totals['running'] <= 6, totals
        status = wait_done(p, batch_id, check=at_most_6)
        assert status['totals']['done'] == 30
        assert len(p.gate.taken) == 30


def test_outcomes_wait_out_a_locked_database(tmp_path, monkeypatch):
    """Items finish while another process holds the database's write lock
    until their leases have run out. Once it lets go they are completed,
    and ran once: before, each outcome was dropped ("outcome not
    recorded") and the item ran again when its lease ran out."""
    monkeypatch.setattr(engine, 'SQLITE_BUSY_TIMEOUT', 0.3)
    with GatedPipeline(str(tmp_path), **{'conductor.lease_seconds': 2}) as p:
        store = p.conductor.scheduler.store
        p.gate.close()
        batch_id = p.api.submit([{'url': p.images.url('/img/lock%d.jpg' % i)}
                                 for i in range(4)])
        p.gate.wait_taken(lambda taken: len(taken) == 4)
        locker = sqlite3.connect(os.path.join(str(tmp_path),
                                              'conductor.sqlite'),
                                 isolation_level=None)
        try:
            locker.execute('BEGIN IMMEDIATE')  # readers go on (WAL)
            p.gate.open()
            leases = [store.get_item(batch_id, i).lease_until
                      for i in range(4)]
            deadline = time.monotonic() + 30
            while time.time() <= max(leases) + 0.5:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert len(p.gate.answered) == 4
        finally:
            locker.close()
        status = wait_done(p, batch_id)
        assert status['totals']['done'] == 4
        assert len(p.gate.taken) == 4
        assert {store.get_item(batch_id, i).attempts
                for i in range(4)} == {1}


def test_large_batches_end_with_failures_and_page_their_status(tmp_path):
    with Pipeline(str(tmp_path), max_message_size=8192) as p:
        events = Events()
        listener = get_notification_listener(
            p.transport, [Target(topic='batch.*')], [events])
        listener.start()
        try:
            items = [{'url': p.images.url('/img/l%d.png' % i)}
                     for i in range(30)]
            items.append({'url': p.images.url('/status/404')})
            batch_id = p.api.submit(items)
            p.events = events
            end = wait_end(p, batch_id)
        finally:
            listener.stop()
            listener.wait(5)
        assert end['totals']['done'] == 30 and end['totals']['failed'] == 1
        assert end['items_complete'] is False
        assert [i['idx'] for i in end['items']] == [30]
        pages = [p.api.status(batch_id, items=True, offset=o, limit=5)
                 for o in range(0, 31, 5)]
        idx = [i['idx'] for page in pages for i in page['items']]
        assert idx == list(range(31))


class IdleWatch(threading.Event):
    """An Event that counts the waits that began on it."""

    def __init__(self):
        super().__init__()
        self.began = 0
        self._changed = threading.Condition()

    def wait(self, timeout=None):
        with self._changed:
            self.began += 1
            self._changed.notify_all()
        return super().wait(timeout)

    def wait_for_waits(self, n, timeout=30):
        with self._changed:
            assert self._changed.wait_for(lambda: self.began >= n, timeout)


def test_a_stopping_conductor_sends_its_last_events_at_once(tmp_path):
    """Stopping, the events thread goes straight to its last round. It
    used to wait for one more poll_interval first when ``wait()`` found it
    idle, so with a long poll_interval ``wait()`` gave up on it and the
    last events stayed unsent."""
    with GatedPipeline(str(tmp_path), **{
            'conductor.poll_interval': 600}) as p:
        batch_id = p.api.submit([{'url': p.images.url('/img/s%d.jpg' % i)}
                                 for i in range(3)])
        wait_done(p, batch_id)
        scheduler = p.conductor.scheduler
        old, due = scheduler._events_due, IdleWatch()
        scheduler._events_due = due
        old.set()  # the events thread leaves its wait on the old one
        due.wait_for_waits(1)
        scheduler.stop()  # wakes the events thread for one round...
        due.wait_for_waits(2)  # ...after which it is idle again
        assert scheduler.wait(10)
        assert not scheduler._publisher.is_alive()


def test_the_conductor_logs_each_batch_start_and_end(pipeline, caplog):
    """It logged nothing per batch: an operator could not tell from its
    log which batches ran."""
    caplog.set_level(logging.INFO, logger='rpcmq.conductor.scheduler')
    p = pipeline
    batch_id = p.api.submit([{'url': p.images.url('/img/log%d.jpg' % i)}
                             for i in range(3)] +
                            [{'url': p.images.url('/status/404')}])
    wait_end(p, batch_id)

    def logged(text):
        return any(text in r.getMessage() for r in caplog.records)
    assert logged('batch %s started: 4 items' % batch_id)
    deadline = time.monotonic() + 30
    while not logged('batch %s ended done_with_failures: 3 of 4 done, 1 '
                     'failed, 0 cancelled' % batch_id):
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.02)


def test_watching_a_finished_batch_reports_the_batchs_own_rate(pipeline):
    """'batch watch' on a batch that had ended divided its items by the
    one status call the watch took (76,265.7 items/s), and the table
    counted done items only (0.0 items/s when all failed)."""
    p = pipeline
    batch_id = p.api.submit([{'url': p.images.url('/status/404')},
                             {'url': p.images.url('/status/404?x=2')}])
    wait_end(p, batch_id)
    out = io.StringIO()
    end = BatchWatcher(p.transport, p.api, batch_id,
                       console=Console(file=out)).watch(timeout=30)
    status = p.api.status(batch_id)
    span = status['updated_at'] - status['created_at']
    assert end['elapsed'] == pytest.approx(span)
    report = Console(file=io.StringIO(), width=200)
    print_report(end, report)
    assert '%.1f' % (2 / span) in report.file.getvalue()


def test_a_conductor_with_peers_steps_as_often_as_one_alone(pipeline):
    """The items a conductor runs are refilled by its own steps (a step
    claims the room its completions free), so a live peer must not make
    it step less often: with N conductors each waiting N times the gap,
    two conductors moved a batch slower than one."""
    scheduler = pipeline.conductor.scheduler
    assert scheduler.step_gap() == scheduler_mod.STEP_GAP
    peer = Membership(scheduler.store, 'peer', 1.0, 5.0)
    peer.join()
    try:
        scheduler.membership.take_over()  # sees the peer alive
        assert scheduler.step_gap() == scheduler_mod.STEP_GAP
    finally:
        peer.leave()


def test_a_batch_end_goes_out_when_its_last_item_is_done(tmp_path,
                                                        monkeypatch):
    """Rounds of events are EVENTS_GAP apart, but the step that finishes a
    batch's last item starts one at once: ``batch.end`` used to wait for
    the rest of the gap (up to 250 ms, a tenth of a 30-image batch)."""
    monkeypatch.setattr(scheduler_mod, 'EVENTS_GAP', 3600)
    with GatedPipeline(str(tmp_path)) as p, listening(p):
        for n in (3, 1):  # a second batch, after the first one's rounds
            batch_id = p.api.submit([{'url': p.images.url(
                '/img/end%d-%d.jpg' % (n, i))} for i in range(n)])
            end = wait_end(p, batch_id, timeout=30)
            assert end['totals']['done'] == n


def test_a_batchs_last_item_is_completed_without_waiting_out_the_gap(
        tmp_path, monkeypatch):
    """Steps are STEP_GAP apart so that completions share a transaction,
    but when a batch's last running item finishes nothing is left to
    share it with: the next step runs at once. A 30-image batch waited up
    to 50 ms for it, a few percent of its time."""
    monkeypatch.setattr(scheduler_mod, 'STEP_GAP', 3600)
    with GatedPipeline(str(tmp_path)) as p, listening(p):
        for n in (3, 1):
            batch_id = p.api.submit([{'url': p.images.url(
                '/img/gap%d-%d.jpg' % (n, i))} for i in range(n)])
            end = wait_end(p, batch_id, timeout=30)
            assert end['totals']['done'] == n
