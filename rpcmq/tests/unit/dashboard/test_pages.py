"""Someone opens the dashboard: the batches, a batch and its items, and
the pages it shows when a batch or the conductor is missing."""

import re

import httpx
import pytest

from rpcmq.tests.unit.dashboard.conftest import (
    PAGE_SIZE,
    T0,
    TOKEN,
    batch,
    item_rows,
    link,
    sign_in,
)


def listed(html):
    """The batch ids of the batches table, in order."""
    return re.findall(r'<a class="id" href="/batches/[^"]*" title="([^"]*)"',
                      html)


def count(html, name):
    return int(re.search(r'id="count-%s">(\d+)<' % name, html).group(1))


@pytest.fixture
def seven(conductor):
    """Seven batches, newest first: b6 .. b0; b6, b4, b2, b0 have failed
    items, b5 is still running."""
    for n in range(6, -1, -1):
        states = ['done', 'done', 'failed'] if n % 2 == 0 else \
            ['done', 'running'] if n == 5 else ['done']
        conductor.add(batch('b%d' % n, states, created_at=T0 + n))
    return conductor


def test_the_batches_page_lists_the_newest_batches(web, seven):
    page = web.get('/')
    assert page.status_code == 200
    assert listed(page.text) == ['b6', 'b5', 'b4']
    assert seven.called('list') == [
        {'limit': PAGE_SIZE, 'state': None, 'offset': 0}]
    row = page.text[page.text.index('title="b6"'):].split('</tr>')[0]
    assert 'done with failures' in row
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>',
                                       row)] == [2, 1, 0, 3]  # done .. total
    assert '100.0%' in row
    assert '2023-11-14 22:13:26 UTC' in row  # T0 + 6, the start
    running = page.text[page.text.index('title="b5"'):].split('</tr>')[0]
    assert 'class="state running"' in running and '50.0%' in running


def test_a_state_filter_is_passed_to_the_conductor(web, seven):
    page = web.get('/', params={'state': 'done_with_failures'})
    assert page.status_code == 200
    assert listed(page.text) == ['b6', 'b4', 'b2']
    assert seven.called('list')[-1]['state'] == 'done_with_failures'
    # The next page keeps the filter.
    assert link(page.text, 'Older') == '/?offset=3&state=done_with_failures'
    page = web.get('/', params={'state': 'running'})
    assert listed(page.text) == ['b5']
    assert link(page.text, 'Older') is None


def test_an_unknown_state_is_a_400_page_and_asks_nothing(web, seven):
    page = web.get('/', params={'state': '<b>bogus</b>'})
    assert page.status_code == 400
    assert 'No such state' in page.text
    assert 'done_with_failures' in page.text  # the valid ones are named
    assert '<b>bogus' not in page.text
    assert seven.called('list') == []


def test_the_batches_page_goes_back_in_time_by_pages(web, seven):
    first = web.get('/')
    assert link(first.text, 'Older') == '/?offset=3'
    assert link(first.text, '← Newer') is None
    second = web.get(link(first.text, 'Older'))
    assert listed(second.text) == ['b3', 'b2', 'b1']
    assert link(second.text, '← Newer') == '/?offset=0'
    assert link(second.text, 'Older') == '/?offset=6'
    last = web.get(link(second.text, 'Older'))
    assert listed(last.text) == ['b0']
    assert link(last.text, 'Older') is None  # the page is not full
    assert [c['offset'] for c in seven.called('list')] == [0, 3, 6]


def test_no_batches_says_how_to_submit_one(web, conductor):
    page = web.get('/')
    assert page.status_code == 200 and listed(page.text) == []
    assert 'rpcmq batch submit FILE' in page.text


@pytest.fixture
def mixed(conductor):
    """One ended batch of 8 items, three of them failed."""
    states = ['done', 'failed', 'done', 'failed', 'cancelled', 'done',
              'failed', 'done']
    conductor.add(batch('mixed', states, state='done_with_failures'))
    return conductor


def test_a_batch_page_shows_its_totals_and_first_items(web, mixed):
    page = web.get('/batches/mixed')
    assert page.status_code == 200
    assert {name: count(page.text, name) for name in (
        'done', 'failed', 'cancelled', 'running', 'pending', 'total')} == {
        'done': 4, 'failed': 3, 'cancelled': 1, 'running': 0, 'pending': 0,
        'total': 8}
    assert 'id="percent">100.0%' in page.text
    assert 'data-ended="yes"' in page.text
    assert item_rows(page.text) == [0, 1, 2]
    assert 'https://images.example/1.jpg' in page.text
    assert 'DownloadFailed' in page.text
    # Done items show their stored key and a thumbnail; failed ones not.
    assert '<td class="key">img/0.jpg</td>' in page.text
    assert 'src="/batches/mixed/items/0/thumb"' in page.text
    assert 'src="/batches/mixed/items/1/thumb"' not in page.text
    assert mixed.called('status') == [
        {'batch_id': 'mixed', 'items': True, 'offset': 0, 'limit': PAGE_SIZE,
         'states': None}]


def test_a_batch_is_read_page_by_page(web, mixed):
    first = web.get('/batches/mixed')
    assert 'items 0–2 of 8' in first.text
    second = web.get('/batches/mixed' + link(first.text, 'Next'))
    assert item_rows(second.text) == [3, 4, 5]
    assert link(second.text, '← Previous') == '?offset=0'
    last = web.get('/batches/mixed' + link(second.text, 'Next'))
    assert item_rows(last.text) == [6, 7]
    assert link(last.text, 'Next') is None
    assert [c['offset'] for c in mixed.called('status')] == [0, 3, 6]


def test_the_failed_filter_asks_the_conductor_for_failed_items(web, mixed):
    shown = web.get('/batches/mixed').text
    assert link(shown, 'failed 3') == '?state=failed'
    page = web.get('/batches/mixed?state=failed')
    assert page.status_code == 200
    assert mixed.called('status')[-1] == {
        'batch_id': 'mixed', 'items': True, 'offset': 0,
        'limit': PAGE_SIZE, 'states': ['failed']}
    assert item_rows(page.text) == [1, 3, 6]
    assert 'items 0–2 of 3' in page.text
    assert link(page.text, 'Next') is None  # 3 failed items: one page


def test_the_failed_filter_pages_too(web, conductor):
    conductor.add(batch('fails', ['failed'] * 4 + ['done'] * 2))
    page = web.get('/batches/fails', params={'state': 'failed'})
    assert item_rows(page.text) == [0, 1, 2]
    assert link(page.text, 'Next') == '?offset=3&state=failed'
    page = web.get('/batches/fails', params={'state': 'failed',
                                             'offset': 3})
    assert item_rows(page.text) == [3]
    assert conductor.called('status')[-1]['offset'] == 3
    assert conductor.called('status')[-1]['states'] == ['failed']


def test_an_unknown_item_state_is_a_400_page(web, mixed):
    page = web.get('/batches/mixed', params={'state': 'exploded'})
    assert page.status_code == 400
    assert 'No such item state' in page.text
    assert mixed.called('status') == []


def test_an_unknown_batch_is_a_404_page(web, conductor):
    page = web.get('/batches/nope')
    assert page.status_code == 404
    assert 'No such batch' in page.text
    assert 'batch &#39;nope&#39; not found; use the id that batch.submit ' \
           'returned' in page.text
    assert conductor.called('status')[0]['batch_id'] == 'nope'


def test_an_absurd_offset_in_the_url_is_no_server_error(web, mixed):
    """Offsets and item indexes come from the URL. The real conductor
    (SQLite) fails on one past 2**63 - 1 with OverflowError, which crossed
    back as itself: the dashboard answered a bare 500 (no page, no
    Content-Security-Policy) and the conductor logged a traceback."""
    huge = str(10 ** 23)
    for path in ('/?offset=' + huge, '/batches/mixed?offset=' + huge,
                 '/batches/mixed?state=failed&offset=' + huge,
                 '/batches/mixed/items/%s/thumb' % huge):
        # A client of its own: a 500 closes the connection.
        answer = httpx.get(str(web.base_url.join(path)), timeout=30)
        assert answer.status_code in (200, 400, 404), (
            path, answer.status_code, answer.text[:200])
        assert 'content-security-policy' in answer.headers, path


def test_without_a_conductor_pages_say_which_topic_is_silent(
        conf, open_dashboard):
    conf.set_override('rpc_response_timeout', 1)
    _, web = open_dashboard()
    for path in ('/', '/batches/b1'):
        page = web.get(path)
        assert page.status_code == 503, path
        assert 'Not available now' in page.text
        assert 'did not answer within 1s' in page.text
        assert 'is rpcmq-conductor running on topic &#39;%s&#39;?' % (
            conf.conductor.topic) in page.text


def test_a_cancel_of_a_running_batch_is_offered_to_signed_in_users(
        open_dashboard, conductor):
    conductor.add(batch('busy', ['done', 'running', 'pending', 'pending']))
    _, web = open_dashboard(token=TOKEN)
    sign_in(web)
    page = web.get('/batches/busy')
    assert 'data-ended="no"' in page.text
    assert 'action="/batches/busy/cancel"' in page.text
    assert 'action="/batches/busy/retry"' not in page.text


def test_a_cancelled_batch_ends_when_its_running_items_do(web, conductor):
    """A cancelled batch showed as ended (an end time, the page's script
    told it was over) while its running items were still running."""
    conductor.add(batch('stopping', ['done', 'running', 'cancelled'],
                        state='cancelled', end_notified=False))
    page = web.get('/batches/stopping')
    assert 'data-ended="no"' in page.text
    conductor.add(batch('stopped', ['done', 'failed', 'cancelled'],
                        state='cancelled'))
    page = web.get('/batches/stopped')
    assert 'data-ended="yes"' in page.text
