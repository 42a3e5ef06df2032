"""batch.status 1.2: the items of chosen states only, page by page, from
the real conductor (what the dashboard's item filters ask for)."""

import time

import pytest

from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.testing.pipeline import Pipeline

#: Which items of the batch fail: a 404 and a page that is no image.
FAILING = {1: '/status/404', 3: '/html', 4: '/status/404', 6: '/html'}


@pytest.fixture(scope='module')
def ended(tmp_path_factory):
    """``(api, batch_id)`` of a batch of 8 items that has ended, the
    items in FAILING failed and the others done."""
    with Pipeline(str(tmp_path_factory.mktemp('states')), servers=1) as p:
        items = [{'url': p.images.url(FAILING.get(idx, '/img/s%d.jpg'
                                                  % idx))}
                 for idx in range(8)]
        batch_id = p.api.submit(items)
        deadline = time.monotonic() + 120
        status = p.api.status(batch_id)
        while status['totals']['done'] + status['totals']['failed'] < 8:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)  # polling the conductor
            status = p.api.status(batch_id)
        yield p.api, batch_id


def idxs(status):
    return [i['idx'] for i in status['items']]


def test_only_the_failed_items_are_answered(ended):
    api, batch_id = ended
    status = api.status(batch_id, items=True, states=['failed'])
    assert idxs(status) == sorted(FAILING)
    assert {i['state'] for i in status['items']} == {'failed'}
    assert {i['error']['type'] for i in status['items']} == {
        'DownloadFailed', 'NotAnImage'}
    # The totals are the whole batch's, whatever the filter.
    assert status['totals']['total'] == 8
    assert status['totals']['failed'] == 4
    assert status['totals']['done'] == 4
    assert status['offset'] == 0


def test_failed_items_come_page_by_page(ended):
    api, batch_id = ended
    pages = [api.status(batch_id, items=True, states=['failed'],
                        offset=offset, limit=3) for offset in (0, 3, 6)]
    assert [idxs(p) for p in pages] == [[1, 3, 4], [6], []]
    assert [p['offset'] for p in pages] == [0, 3, 6]
    # Offsets count the chosen items, not the batch's indexes.
    assert idxs(api.status(batch_id, items=True, states=['failed'],
                           offset=1, limit=2)) == [3, 4]


def test_several_states_and_no_states(ended):
    api, batch_id = ended
    assert idxs(api.status(batch_id, items=True,
                           states=['done'])) == [0, 2, 5, 7]
    assert idxs(api.status(batch_id, items=True, states=['failed', 'done'],
                           offset=2, limit=4)) == [2, 3, 4, 5]
    assert idxs(api.status(batch_id, items=True,
                           states=['running', 'pending'])) == []
    assert idxs(api.status(batch_id, items=True, offset=5,
                           limit=2)) == [5, 6]
    assert 'items' not in api.status(batch_id, states=['failed'])


def test_an_unknown_state_is_refused_with_the_valid_ones(ended):
    api, batch_id = ended
    with pytest.raises(InvalidBatch) as info:
        api.status(batch_id, items=True, states=['bogus'])
    assert 'pending, running, done, failed, cancelled' in str(info.value)
    assert "'bogus'" in str(info.value)
    with pytest.raises(InvalidBatch):
        api.status(batch_id, items=True, states=['failed', 'done_with_'
                                                 'failures'])


def test_states_of_an_unknown_batch_is_batch_not_found(ended):
    api, _ = ended
    with pytest.raises(BatchNotFound):
        api.status('no-such-batch', items=True, states=['failed'])


def test_an_offset_past_every_row_is_an_empty_page(ended):
    """An offset from a URL (the dashboard's) past 2**63 - 1 made SQLite
    raise OverflowError in the conductor, which logged a traceback and
    answered it as an unexpected error."""
    api, batch_id = ended
    huge = 10 ** 23
    assert api.status(batch_id, items=True, offset=huge)['items'] == []
    assert api.status(batch_id, items=True, states=['failed'],
                      offset=huge, limit=huge)['items'] == []
    assert api.list(offset=huge, limit=huge) == []
    # Pages within the batch are as before.
    assert idxs(api.status(batch_id, items=True, offset=6)) == [6, 7]
