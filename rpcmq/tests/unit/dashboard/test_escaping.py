"""Whoever submits a batch chooses its URLs, keys and ids, and remote
servers write its errors: the dashboard shows all of them as text, never
as markup, and its Content-Security-Policy runs no inline script anyway."""

import re

import pytest

from rpcmq.tests.unit.dashboard.conftest import (
    TOKEN,
    batch,
    item,
    sign_in,
)

SCRIPT = '<script>alert(1)</script>'
IMG = '"><img src=x onerror=alert(1)>'
#: What each one looks like escaped (Jinja2 escapes " as &#34;).
ESCAPED = {SCRIPT: '&lt;script&gt;alert(1)&lt;/script&gt;',
           IMG: '&#34;&gt;&lt;img src=x onerror=alert(1)&gt;'}
RAW_TAGS = re.compile(r'<script>alert|<img src=x', re.I)


@pytest.fixture
def hostile(conductor):
    items = [
        item(0, 'done', url='https://images.example/' + SCRIPT,
             result={'key': 'k/' + SCRIPT, 'size': 1, 'etag': 'e',
                     'url': 'file:///x', 'server': IMG}),
        item(1, 'failed', url='http://images.example/x' + IMG,
             error={'type': SCRIPT, 'message': IMG}),
        item(2, 'failed', url='javascript:alert(document.cookie)',
             key=IMG, error={'type': IMG, 'message': SCRIPT}),
    ]
    conductor.add(batch(IMG, items=items), batch(SCRIPT, ['done']))
    return conductor


def assert_escaped(html, *texts):
    assert not RAW_TAGS.search(html), RAW_TAGS.search(html)
    for text in texts:
        assert ESCAPED[text] in html, text


def test_batch_ids_on_the_batches_page_are_text(web, hostile):
    page = web.get('/')
    assert page.status_code == 200
    assert_escaped(page.text, SCRIPT, IMG)  # in the links' titles
    assert 'href="/batches/%3Cscript%3Ealert%281%29%3C/script%3E"' in \
        page.text


def test_urls_keys_and_errors_on_a_batch_page_are_text(web, hostile):
    page = web.get('/batches/' + IMG)
    assert page.status_code == 200
    assert hostile.called('status')[0]['batch_id'] == IMG
    assert_escaped(page.text, SCRIPT, IMG)
    assert '<h1>Batch <span class="id">%s</span></h1>' % ESCAPED[IMG] in \
        page.text
    assert '<td class="key">k/%s</td>' % ESCAPED[SCRIPT] in page.text
    assert '<td class="key">%s</td>' % ESCAPED[IMG] in page.text
    assert '<strong>%s</strong>: %s' % (ESCAPED[SCRIPT], ESCAPED[IMG]) in \
        page.text
    assert '<strong>%s</strong>: %s' % (ESCAPED[IMG], ESCAPED[SCRIPT]) in \
        page.text
    # An http URL stays a link, its quote cannot end the attribute.
    assert 'href="http://images.example/x%s"' % ESCAPED[IMG] in page.text


def test_a_javascript_url_is_not_a_link(web, hostile):
    page = web.get('/batches/' + IMG)
    assert 'javascript:alert(document.cookie)' in page.text  # shown ...
    assert not re.search(r'href="\s*javascript:', page.text, re.I)  # inert


def test_the_error_page_shows_an_unknown_id_as_text(web, conductor):
    page = web.get('/batches/' + IMG)
    assert page.status_code == 404
    assert_escaped(page.text, IMG)


def test_the_items_fragment_is_escaped_too(web, hostile):
    page = web.get('/batches/' + IMG, params={'fragment': 'items'})
    assert page.status_code == 200
    assert '<html' not in page.text  # the fragment alone
    assert_escaped(page.text, SCRIPT, IMG)


def test_a_hostile_state_filter_is_not_echoed_as_markup(web, hostile):
    page = web.get('/batches/' + IMG, params={'state': SCRIPT})
    assert page.status_code == 400
    assert not RAW_TAGS.search(page.text)


def test_every_answer_forbids_inline_script(open_dashboard, conductor,
                                            store):
    conductor.add(batch('b1', ['done', 'failed']))
    _, web = open_dashboard(token=TOKEN)
    answers = [web.get('/', headers={'accept': 'text/html'}),  # 303
               web.get('/'),                                   # 401
               web.get('/login'),
               web.post('/login', data={'token': 'wrong'}),    # 401
               web.get('/static/dashboard.js')]
    sign_in(web)
    answers += [web.get('/'), web.get('/batches/b1'),
                web.get('/batches/none'),                   # 404
                web.get('/batches/b1/items/0/thumb'),       # 404 no preview
                web.get('/no/such/page'),
                web.post('/batches/b1/retry', data={}),     # 403 no csrf
                web.get('/healthz')]
    with web.stream('GET', '/batches/b1/events') as events:
        answers.append(events)
    assert {a.status_code for a in answers} == {
        200, 303, 401, 403, 404}
    for answer in answers:
        policy = answer.headers.get('content-security-policy', '')
        script = [d for d in policy.split(';')
                  if d.split() and d.split()[0] == 'script-src']
        assert script == [" script-src 'self'"], (answer.url, policy)
        assert "'unsafe-inline'" not in policy
        assert "default-src 'self'" in policy
        assert answer.headers['x-content-type-options'] == 'nosniff'
        assert answer.headers['x-frame-options'] == 'DENY'


def test_pages_carry_no_inline_script(web, hostile):
    for path in ('/', '/batches/' + IMG, '/servers'):
        html = web.get(path).text
        scripts = re.findall(r'<script\b[^>]*>', html)
        assert scripts == ['<script src="/static/dashboard.js" defer>'], \
            path
        assert not re.search(r'\son[a-z]+=', html.replace(
            ESCAPED[IMG], '').replace(ESCAPED[SCRIPT], ''))
