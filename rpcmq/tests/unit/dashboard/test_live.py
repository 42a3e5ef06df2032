"""A batch page follows its batch: server-sent events from the batch.*
notifications the dashboard hears, totals from the conductor, and one
``end`` once the conductor has sent batch.end. The servers page lists
the servers that announced themselves."""

import time

import pytest

from rpcmq.notify import Notifier
from rpcmq.tests.unit.dashboard.conftest import EventStream, batch

ITEM_FIELDS = ('idx', 'state', 'attempts', 'error')


@pytest.fixture
def notifier(transport):
    """Sends as the conductor does, on the dashboard's transport."""
    return Notifier(transport, 'conductor.test-host')


def item_event(batch_id, idx, state='done', **extra):
    payload = {'batch_id': batch_id, 'idx': idx, 'state': state,
               'attempts': 1, 'error': None,
               'url': 'https://images.example/%d.jpg' % idx,
               'result': {'key': 'img/%d.jpg' % idx}}
    payload.update(extra)
    return payload


def next_but_progress(stream):
    """The next event that is not a ``progress`` (those come on their own
    every few seconds while the batch runs)."""
    while True:
        event = stream.next()
        if event is None or event[0] != 'progress':
            return event


def test_an_ended_batch_streams_its_totals_and_ends(web, conductor):
    conductor.add(batch('ended', ['done', 'failed', 'cancelled']))
    with EventStream(web, '/batches/ended/events') as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers['content-type'].startswith(
            'text/event-stream')
        event, progress = stream.next()
        assert event == 'progress'
        assert progress['batch_id'] == 'ended'
        assert progress['state'] == 'done_with_failures'
        assert progress['ended'] is True and progress['percent'] == 100.0
        assert progress['totals'] == {'total': 3, 'pending': 0, 'running': 0,
                                      'done': 1, 'failed': 1, 'cancelled': 1}
        assert stream.next() == ('end', progress)
        assert stream.next() is None  # the server closed the stream
    # Totals only: the live page never asks for items.
    assert [c['items'] for c in conductor.called('status')] == [False]


def test_events_of_an_unknown_batch_are_a_404(web, conductor):
    answer = web.get('/batches/nope/events')
    assert answer.status_code == 404
    assert 'No such batch' in answer.text


def test_a_running_batch_streams_its_items_until_batch_end(
        web, conductor, notifier):
    conductor.add(batch('live', ['done', 'running', 'pending']),
                  batch('other', ['running']))
    with EventStream(web, '/batches/live/events') as stream:
        event, progress = stream.next()
        assert event == 'progress' and progress['ended'] is False
        assert progress['totals']['done'] == 1
        # The page follows its own batch only.
        notifier.info({}, 'batch.item', item_event('other', 0))
        notifier.info({}, 'batch.item', item_event(
            'live', 1, 'failed', attempts=3,
            error={'type': 'DownloadFailed', 'message': 'HTTP 500'}))
        assert next_but_progress(stream) == ('item', {
            'idx': 1, 'state': 'failed', 'attempts': 3,
            'error': {'type': 'DownloadFailed', 'message': 'HTTP 500'}})
        # The conductor has sent batch.end: the next status says so.
        conductor.add(batch('live', ['done', 'failed', 'done']))
        event, last = stream.next()
        while event == 'progress' and not last['ended']:
            event, last = stream.next()
        assert event == 'progress'
        assert last['totals']['failed'] == 1 and last['ended'] is True
        assert stream.next() == ('end', last)
        assert stream.next() is None


def test_the_page_ends_only_once_batch_end_was_sent(web, conductor,
                                                    notifier):
    """A batch whose items are all finished but whose batch.end the
    conductor has not sent yet is shown as ended, the stream goes on."""
    conductor.add(batch('late', ['done', 'running']))
    with EventStream(web, '/batches/late/events') as stream:
        assert stream.next()[0] == 'progress'
        conductor.add(batch('late', ['done', 'done'], end_notified=False))
        notifier.info({}, 'batch.item', item_event('late', 1))
        assert next_but_progress(stream)[0] == 'item'
        event, shown = stream.next()
        assert event == 'progress' and shown['ended'] is True
        conductor.update('late', end_notified=True)
        notifier.info({}, 'batch.end', {'batch_id': 'late'})
        assert next_but_progress(stream) == ('end', shown)


def test_item_events_of_finished_items_reach_the_page_in_order(
        web, conductor, notifier):
    conductor.add(batch('many', ['running'] * 20))
    with EventStream(web, '/batches/many/events') as stream:
        assert stream.next()[0] == 'progress'
        for idx in range(20):
            notifier.info({}, 'batch.item', item_event('many', idx))
        seen = []
        while len(seen) < 20:
            event = next_but_progress(stream)
            assert event is not None and event[0] == 'item'
            assert set(event[1]) == set(ITEM_FIELDS)
            seen.append(event[1]['idx'])
        assert seen == list(range(20))


def test_the_servers_page_lists_announced_servers(web, notifier):
    announced = {'topic': 'image', 'server': 'demo-9', 'pid': 4242,
                 'executor': 'threading', 'size': 16, 'busy': 3,
                 'version': '9.9'}
    notifier.info({}, 'server.alive', announced)
    deadline = time.monotonic() + 30
    page = web.get('/servers')
    while 'data-server="demo-9"' not in page.text:
        assert time.monotonic() < deadline, 'demo-9 never shown'
        time.sleep(0.05)  # polling the page, not synchronising
        page = web.get('/servers')
    row = page.text[page.text.index('data-server="demo-9"'):]
    row = row.split('</tr>')[0]
    assert 'class="state alive"' in row and '3/16' in row and '4242' in row
    # memory:// keeps no queue depths; the page says so.
    assert 'kept by RabbitMQ only' in page.text
    notifier.info({}, 'server.stopped', announced)
    while 'class="state stopped"' not in page.text:
        assert time.monotonic() < deadline, 'demo-9 never shown stopped'
        time.sleep(0.05)
        page = web.get('/servers')
