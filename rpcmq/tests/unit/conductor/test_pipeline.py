"""Batches through the conductor and two image servers, on memory://."""

import hashlib
import os
import threading
import time

import pytest

from rpcmq import RPCClient, Target
from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.service import ConductorService
from rpcmq.notify import get_notification_listener
from rpcmq.testing.imageserver import make_image
from rpcmq.testing.pipeline import Pipeline


class Events:
    def __init__(self):
        self.log = []
        self.ended = threading.Event()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.log.append((event_type, payload))
        if event_type == 'batch.end':
            self.ended.set()

    def of(self, event_type, batch_id):
        return [p for t, p in self.log
                if t == event_type and p['batch_id'] == batch_id]


@pytest.fixture
def pipeline(tmp_path):
    with Pipeline(str(tmp_path)) as p:
        p.events = Events()
        listener = get_notification_listener(
            p.transport, [Target(topic='batch.*')], [p.events])
        listener.start()
        yield p
        listener.stop()
        listener.wait(5)


def wait_end(p, batch_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.events.of('batch.end', batch_id):
            return p.events.of('batch.end', batch_id)[0]
        time.sleep(0.05)
    raise AssertionError('no batch.end for %s: %s' % (
        batch_id, p.api.status(batch_id)))


def test_a_batch_is_stored_and_reported(pipeline):
    p = pipeline
    good = [{'url': p.images.url('/img/p%d.jpg?kb=10' % i)} for i in range(20)]
    named = {'url': p.images.url('/img/named.png'), 'name': 'cats/tom'}
    bad = [{'url': p.images.url('/status/404')},
           {'url': p.images.url('/html')}]
    batch_id = p.api.submit(good + [named] + bad)
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
    assert p.api.submit(items + items, batch_id='task-1') == 'task-1'
    end = wait_end(p, 'task-1')
    assert end['totals']['total'] == 5 and end['totals']['done'] == 5
    assert sum(p.images.count('/img/r%d.jpg' % i) for i in range(5)) == 5


def test_transient_failures_are_retried(pipeline):
    p = pipeline
    url = p.images.url('/flaky/f.jpg?fail=2')  # two 500s, then the image
    batch_id = p.api.submit([{'url': url}])
    end = wait_end(p, batch_id)
    assert end['totals']['done'] == 1
    assert p.images.count('/flaky/f.jpg') == 3


def test_items_of_a_server_that_went_away_run_elsewhere(tmp_path):
    with Pipeline(str(tmp_path), **{'conductor.fetch_timeout': 2,
                                    'conductor.store_timeout': 1,
                                    'conductor.retry_backoff': 0.05}) as p:
        items = [{'url': p.images.url('/slow/d%d.jpg?delay=0.2&chunks=3'
                                      % i)} for i in range(8)]
        batch_id = p.api.submit(items)
        time.sleep(0.3)  # both servers are fetching
        p.stop_server('demo-2')  # finishes its fetches, then is gone
        deadline = time.monotonic() + 60
        while p.api.status(batch_id)['state'] != 'done':
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = p.api.status(batch_id, items=True)
        assert status['totals']['done'] == 8
        # Stores pinned to demo-2 after it left timed out; those items
        # ran again, on demo-1.
        retried = [i for i in status['items'] if i['attempts'] > 1]
        assert retried
        assert {i['result']['server'] for i in retried} == {'demo-1'}


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
    slow = [{'url': p.images.url('/slow/s%d.jpg?delay=0.2&chunks=3' % i)}
            for i in range(40)]
    batch_id = p.api.submit(slow)
    totals = p.api.cancel(batch_id)
    assert totals['cancelled'] > 0
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
    with Pipeline(str(tmp_path), **{'conductor.max_inflight': 6,
                                    'conductor.max_inflight_per_batch': 6,
                                    'executor_thread_pool_size': 8}) as p:
        batch_id = p.api.submit([{'url': p.images.url(
            '/slow/w%d.jpg?delay=0.1&chunks=4' % i)} for i in range(30)])
        peak = 0
        deadline = time.monotonic() + 60
        while p.api.status(batch_id)['state'] != 'done':
            assert time.monotonic() < deadline
            peak = max(peak, p.api.status(batch_id)['totals']['running'])
            time.sleep(0.02)
        assert peak == 6


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
