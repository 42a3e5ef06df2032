"""A person uses rpcmq-dashboard in a real browser (headless Chromium)
while real daemons run the batches on RabbitMQ.

One ``rpcmq-server`` (endpoints ``image`` and ``diag``, a file store, 4
calls at a time), one ``rpcmq-conductor`` (SQLite, 4 items in flight per
batch, no automatic item retries) and one ``rpcmq-dashboard`` (a token
set, a port of its own) run for the whole module; this process serves the
images and submits the batches through ``ConductorAPI``. Each test opens
a fresh browser context and signs in through the form, as a person does.
"""

import re
import time
import uuid

import pytest

from rpcmq.testing.imageserver import ImageServer
from rpcmq.tests.functional import browser
from rpcmq.tests.functional.conftest import RABBIT_URL, require
from rpcmq.tests.functional.fixtures import wait_until

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the stack fixture fails or skips, saying why
    expect = sync_playwright = None

#: Milliseconds Playwright waits for what a page should come to show; the
#: test machines are slow and shared.
WAIT = 60_000
SCRIPT = '<script>window.__pwned=1</script>'
CONDUCTOR_OPTS = {'max_inflight': 8, 'max_inflight_per_batch': 4,
                  'item_retries': 0, 'retry_backoff': 0.1,
                  'poll_interval': 0.1, 'fetch_timeout': 30,
                  'store_timeout': 30}


@pytest.fixture(scope='module')
def images():
    with ImageServer() as srv:
        yield srv


@pytest.fixture(scope='module')
def stack(tmp_path_factory, images):
    require('rabbit')
    browser.require_chromium()
    stack = browser.DashboardStack(tmp_path_factory.mktemp('dashboard'),
                                   RABBIT_URL, executor_size=4,
                                   conductor_opts=CONDUCTOR_OPTS)
    try:
        stack.start()
        yield stack
    finally:
        codes = stack.close()
    assert set(codes.values()) <= {0, None}, (codes, stack.logs())


@pytest.fixture(scope='module')
def chromium(stack):
    with sync_playwright() as pw:
        chromium = browser.launch(pw)
        expect.set_options(timeout=WAIT)
        try:
            yield chromium
        finally:
            expect.set_options(timeout=None)
            chromium.close()


@pytest.fixture
def page(chromium, stack):
    """A new browser context (no cookies yet) and its page, 1280x900."""
    context = chromium.new_context(viewport={'width': 1280, 'height': 900})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.csp_violations = []
    page.on('console', lambda msg: 'Content Security Policy' in msg.text
            and page.csp_violations.append(msg.text))
    yield page
    context.close()


def sign_in(page, stack):
    """Sign in through the form, as a person does; lands on the batches."""
    page.goto(stack.url)
    expect(page).to_have_url(re.compile(r'/login\?next=%2F$'))
    page.fill('#token', browser.TOKEN)
    page.click('#sign-in')
    expect(page).to_have_url(stack.url)
    expect(page.locator('h1')).to_have_text('Batches')


def batch_url(stack, batch_id):
    return '%sbatches/%s' % (stack.url, batch_id)


def name():
    return uuid.uuid4().hex[:10]


def items_of(stack, batch_id):
    return {i['idx']: i for i in stack.api.status(
        batch_id, items=True)['items']}


def test_a_user_signs_in_and_watches_a_batch_to_its_end(stack, images, page,
                                                        tmp_path, capsys):
    # A wrong token is refused, the right one signs in.
    page.goto(stack.url)
    page.fill('#token', 'not-the-token')
    page.click('#sign-in')
    expect(page.locator('#error')).to_contain_text('not the token')
    sign_in(page, stack)

    run = name()
    urls = [images.url('/img/%s-%02d.%s?kb=%d' % (
        run, i, ('jpg', 'png', 'webp')[i % 3], 10 + i % 4 * 5))
        for i in range(24)]
    # Two slow ones at the end keep the batch running while the page opens.
    urls += [images.url('/slow/%s-slow-%d.jpg?delay=0.3&chunks=15'
                        % (run, i)) for i in range(2)]
    failing = [images.url('/status/404?%s-%d' % (run, i)) for i in range(3)]
    failing.append(images.url('/status/404?q=%s' % SCRIPT))
    urls += failing
    assert len(urls) == 30
    batch_id = stack.submit([{'url': u} for u in urls])

    answer = page.goto(batch_url(stack, batch_id))
    assert answer.status == 200
    assert 'data-ended="no"' in answer.text(), \
        'the batch had ended before its page opened: nothing to watch live'
    page.evaluate('window.__marker = 1')
    navigations = []
    page.on('framenavigated', lambda frame: frame == page.main_frame and
            navigations.append(frame.url))

    # The bar fills, the counters move, the page ends, all without a reload.
    page.wait_for_function(
        "() => { const bar = document.getElementById('bar');"
        " return bar.max === 30 && bar.value === bar.max; }")
    expect(page.locator('#percent')).to_have_text(
        re.compile(r'^100(\.0)?%$'))
    page.wait_for_selector('body[data-batch-ended="yes"]', state='attached')
    assert page.evaluate('window.__marker') == 1, 'the page was reloaded'
    assert navigations == [], navigations
    expect(page.locator('#state')).to_have_text('done with failures')
    expect(page.locator('#count-done')).to_have_text('26')
    expect(page.locator('#count-failed')).to_have_text('4')
    expect(page.locator('tr[data-idx]')).to_have_count(30)

    # The script in a URL is shown as text and never runs.
    attacked = page.locator('tr[data-idx="29"]')
    expect(attacked.locator('td.url')).to_contain_text(SCRIPT)
    expect(attacked.locator('td.error')).to_contain_text(SCRIPT)
    expect(attacked.locator('span.state')).to_have_text('failed')
    assert page.evaluate('typeof window.__pwned') == 'undefined'
    assert page.locator('script').count() == 1  # dashboard.js only
    assert page.csp_violations == []

    # A done item shows its thumbnail, drawn from the stored image.
    thumb = page.locator('tr[data-idx="0"] td.thumb img')
    thumb.scroll_into_view_if_needed()
    thumb.evaluate('img => img.decode()')
    assert thumb.evaluate('img => img.naturalWidth') > 0

    page.evaluate('window.scrollTo(0, 0)')
    shot = '%s/dashboard-batch-%s.png' % (browser.artifact_dir(tmp_path),
                                          batch_id)
    page.screenshot(path=shot, full_page=True)
    with capsys.disabled():
        print('\nscreenshot of the batch page: %s' % shot)

    # The failed filter shows the failed items only.
    page.click('#filter-failed')
    expect(page).to_have_url(batch_url(stack, batch_id) + '?state=failed')
    expect(page.locator('#filter-failed')).to_have_class('here')
    expect(page.locator('tr[data-idx]')).to_have_count(4)
    assert page.locator('tr[data-idx] span.state').all_inner_texts() == \
        ['failed'] * 4
    assert sorted(int(i) for i in page.locator('tr[data-idx]').evaluate_all(
        'rows => rows.map(r => r.dataset.idx)')) == [26, 27, 28, 29]
    assert page.evaluate('typeof window.__pwned') == 'undefined'
    assert page.csp_violations == []


def test_retry_button_runs_the_failed_items_again(stack, images, page):
    run = name()
    urls = [images.url('/img/%s-%d.jpg?kb=8' % (run, i)) for i in range(5)]
    # Fails its first download (500; no retries configured), then serves.
    urls.append(images.url('/flaky/%s.jpg?fail=1&mode=status' % run))
    urls += [images.url('/status/404?%s-%d' % (run, i)) for i in range(2)]
    batch_id = stack.submit([{'url': u} for u in urls])
    first_end = stack.wait_end(batch_id)
    assert first_end['totals']['failed'] == 3, first_end

    sign_in(page, stack)
    page.goto(batch_url(stack, batch_id))
    # The page follows even an ended batch until its end event; then it
    # has redrawn its table and lets go of the server.
    page.wait_for_load_state('networkidle')
    expect(page.locator('#count-failed')).to_have_text('3')
    retry = page.locator('#retry')
    expect(retry).to_have_text('Retry 3 failed items')
    retry.click()

    expect(page.locator('#notice')).to_have_text(
        '3 failed items queued again')
    page.wait_for_selector('body[data-batch-ended="yes"]', state='attached')
    expect(page.locator('#count-done')).to_have_text('6')
    expect(page.locator('#count-failed')).to_have_text('2')
    expect(page.locator('#retry')).to_have_text('Retry 2 failed items')

    # The conductor ran the three items again: a second attempt each, a
    # second batch.end.
    items = items_of(stack, batch_id)
    assert [(items[i]['state'], items[i]['attempts']) for i in (5, 6, 7)] \
        == [('done', 2), ('failed', 2), ('failed', 2)], items
    assert all(items[i]['attempts'] == 1 for i in range(5)), items
    ends = wait_until(lambda: (lambda e: e if len(e) >= 2 else None)(
        stack.events.of('batch.end', batch_id)), timeout=60,
        what='the second batch.end')
    assert ends[1]['totals']['done'] == 6 and ends[1]['totals']['failed'] \
        == 2, ends
    assert images.count('/flaky/%s.jpg' % run) == 2


def test_cancel_button_stops_a_running_batch(stack, images, page):
    run = name()
    # 16 downloads of 3 s each, 4 at a time: about 12 s if left alone.
    paths = ['/slow/%s-%02d.jpg' % (run, i) for i in range(16)]
    batch_id = stack.submit([{'url': images.url(p + '?delay=0.3&chunks=10')}
                             for p in paths])

    sign_in(page, stack)
    page.goto(batch_url(stack, batch_id))
    expect(page.locator('#state')).to_have_text('running')
    expect(page.locator('#count-running')).not_to_have_text('0')
    page.locator('#cancel').click()

    notice = page.locator('#notice')
    expect(notice).to_have_text(re.compile(
        r'^cancelled: \d+ items will not run; \d+ running finish$'))
    cancelled, running = map(int, re.findall(r'\d+', notice.inner_text()))
    assert cancelled >= 1 and cancelled + running <= 16, notice.inner_text()
    expect(page.locator('#state')).to_have_text('cancelled')

    # The running downloads finish, the page follows them to the end.
    expect(page.locator('#count-running')).to_have_text('0')
    expect(page.locator('#count-pending')).to_have_text('0')
    expect(page.locator('#count-cancelled')).to_have_text(str(cancelled))
    expect(page.locator('#cancel')).to_have_count(0)
    page.wait_for_selector('body[data-batch-ended="yes"]', state='attached')

    end = stack.wait_end(batch_id)
    assert end['state'] == 'cancelled', end
    totals = end['totals']
    assert totals['cancelled'] == cancelled, end
    assert totals['done'] + totals['failed'] == 16 - cancelled, end
    # The cancelled items were never downloaded.
    items = items_of(stack, batch_id)
    for idx, path in enumerate(paths):
        if items[idx]['state'] == 'cancelled':
            assert images.count(path) == 0, (idx, items[idx])


def test_a_post_without_the_csrf_field_is_refused(stack, images, page,
                                                  chromium):
    run = name()
    batch_id = stack.submit([
        {'url': images.url('/img/%s.jpg?kb=8' % run)},
        {'url': images.url('/status/404?%s' % run)}])
    stack.wait_end(batch_id)
    sign_in(page, stack)
    page.goto(batch_url(stack, batch_id))
    page.wait_for_load_state('networkidle')
    expect(page.locator('#retry')).to_have_text('Retry 1 failed item')
    csrf = page.locator('form[action$="/retry"] input[name="csrf"]')
    token = csrf.get_attribute('value')
    assert token
    retry = batch_url(stack, batch_id) + '/retry'

    # Signed in (the session cookie goes along), but no or a wrong field.
    for form in ({}, {'csrf': ''}, {'csrf': 'f' * 64}):
        answer = page.request.post(retry, form=form, max_redirects=0)
        assert answer.status == 403, (form, answer.status, answer.text())
        assert 'stale or forged' in answer.text()
    # The right field, posted from another site.
    answer = page.request.post(retry, form={'csrf': token}, max_redirects=0,
                               headers={'Origin': 'http://evil.example'})
    assert answer.status == 403, answer.text()
    assert 'another site' in answer.text()
    # Without the session cookie: not even signed in.
    stranger = chromium.new_context()
    try:
        answer = stranger.request.post(retry, form={'csrf': token},
                                       max_redirects=0)
        assert answer.status == 401, answer.text()
    finally:
        stranger.close()

    item = items_of(stack, batch_id)[1]
    assert (item['state'], item['attempts']) == ('failed', 1), item
    assert len(stack.events.of('batch.end', batch_id)) == 1

    # The same post with the page's own field is taken.
    answer = page.request.post(retry, form={'csrf': token}, max_redirects=0)
    assert answer.status == 303, answer.text()
    assert 'notice=1+failed+item+queued+again' in answer.headers['location']
    wait_until(lambda: len(stack.events.of('batch.end', batch_id)) == 2,
               timeout=60, what='the batch.end after the retry')


def test_the_servers_page_shows_the_live_server_and_its_queue(stack, page):
    """The image server announces itself; its topic's queue is read by
    passive declares on RabbitMQ (consumers, waiting, dead letters)."""
    sign_in(page, stack)
    page.goto(stack.url + 'servers')
    row = page.locator('table.servers tbody tr')
    deadline = time.monotonic() + WAIT / 1000
    while row.count() == 0:  # heard within a second or two
        assert time.monotonic() < deadline, page.content()
        page.reload()
    expect(row.locator('.state')).to_have_text('alive')
    expect(row).to_contain_text(stack.image_topic)
    expect(row).to_contain_text('eventlet')
    expect(row.locator('meter')).to_have_attribute('max', '4')
    queue = page.locator('table.queues tbody tr', has_text=stack.image_topic)
    expect(queue).to_have_count(1)
    consumers = int(queue.locator('td').nth(2).inner_text())
    assert consumers >= 1
    assert page.csp_violations == []
