"""Who may look and who may act: ``[dashboard] auth_token``, the session
cookie, the CSRF field of the forms and the Origin of a POST."""

import hashlib
import hmac
import urllib.parse

import httpx
import pytest

from rpcmq.dashboard.auth import COOKIE, Guard
from rpcmq.tests.unit.dashboard.conftest import (
    TOKEN,
    batch,
    csrf_of,
    sign_in,
)

HTML = {'accept': 'text/html,application/xhtml+xml'}


@pytest.fixture
def batches(conductor):
    conductor.add(batch('ended', ['done', 'failed', 'failed']),
                  batch('busy', ['done', 'running', 'pending', 'pending']))
    return conductor


@pytest.fixture
def signed(open_dashboard, batches):
    """A client of a dashboard with a token."""
    return open_dashboard(token=TOKEN)[1]


def acted(conductor):
    return conductor.called('cancel') + conductor.called('retry')


def test_without_a_token_pages_are_open_and_actions_are_off(web, batches):
    page = web.get('/batches/ended')
    assert page.status_code == 200
    assert csrf_of(page.text) is None  # no form
    assert 'set <code>[dashboard] auth_token</code>' in page.text
    for verb in ('cancel', 'retry'):
        refused = web.post('/batches/busy/%s' % verb, data={'csrf': ''})
        assert refused.status_code == 403
        assert 'actions are off: set [dashboard] auth_token to allow ' \
               'cancel and retry' in refused.text
    assert acted(batches) == []


def test_a_browser_without_a_session_is_sent_to_sign_in(signed, batches):
    page = signed.get('/batches/ended', headers=HTML)
    assert page.status_code == 303
    where = urllib.parse.urlsplit(page.headers['location'])
    assert where.path == '/login'
    assert urllib.parse.parse_qs(where.query) == {'next': ['/batches/ended']}
    form = signed.get(page.headers['location'])
    assert form.status_code == 200
    assert 'name="next" value="/batches/ended"' in form.text
    assert batches.called('status') == []
    # Signed in, they are back on the page they asked for.
    back = signed.post('/login', data={'token': TOKEN,
                                       'next': '/batches/ended'})
    assert back.headers['location'] == '/batches/ended'


def test_a_script_without_a_token_gets_401(signed, batches):
    for path in ('/', '/batches/ended', '/batches/ended/events',
                 '/batches/ended/items/0/thumb', '/servers'):
        answer = signed.get(path)
        assert answer.status_code == 401, path
        assert 'Authorization: Bearer TOKEN' in answer.text
    assert signed.post('/batches/busy/cancel').status_code == 401
    assert batches.calls == []


def test_a_wrong_token_signs_nobody_in(signed, batches):
    answer = signed.post('/login', data={'token': TOKEN + 'x', 'next': '/'})
    assert answer.status_code == 401
    assert 'That is not the token of this dashboard' in answer.text
    assert 'set-cookie' not in answer.headers
    assert signed.get('/').status_code == 401


def test_the_right_token_sets_a_strict_http_only_session(signed, batches):
    answer = sign_in(signed)
    assert answer.headers['location'] == '/'
    cookie = answer.headers['set-cookie']
    assert cookie.startswith(COOKIE + '=')
    attributes = {a.strip().lower() for a in cookie.split(';')[1:]}
    assert 'httponly' in attributes
    assert 'samesite=strict' in attributes
    assert TOKEN not in cookie
    page = signed.get('/batches/ended', headers=HTML)
    assert page.status_code == 200
    assert 'Sign out' in page.text


def test_a_bearer_token_opens_the_pages(signed, batches):
    assert signed.get('/', headers={
        'authorization': 'Bearer ' + TOKEN}).status_code == 200
    assert signed.get('/', headers={
        'authorization': 'Bearer ' + TOKEN[:-1]}).status_code == 401
    assert signed.get('/', headers={
        'authorization': 'Basic ' + TOKEN}).status_code == 401


@pytest.mark.parametrize('cookie', [
    'forged', '0' * 32 + '.' + '0' * 64, '.',
    # A session signed with another token.
    'abc.' + hmac.new(b'another token', b'session:abc',
                      hashlib.sha256).hexdigest(),
])
def test_a_forged_cookie_is_refused(signed, batches, cookie):
    signed.cookies.set(COOKIE, cookie)
    assert signed.get('/').status_code == 401
    assert signed.get('/', headers=HTML).status_code == 303
    # The same way, a session the token signed is taken.
    signed.cookies.set(COOKIE, Guard(TOKEN).new_session())
    assert signed.get('/').status_code == 200


def test_retry_needs_the_csrf_field_of_the_page(signed, batches):
    sign_in(signed)
    page = signed.get('/batches/ended')
    assert 'action="/batches/ended/retry"' in page.text
    assert 'Retry 2 failed items' in page.text
    csrf = csrf_of(page.text)
    assert csrf
    for form in ({}, {'csrf': ''}, {'csrf': 'f' * 64},
                 {'csrf': csrf[:-1]}):
        refused = signed.post('/batches/ended/retry', data=form)
        assert refused.status_code == 403, form
        assert 'refused: the form is stale or forged' in refused.text
    assert acted(batches) == []
    done = signed.post('/batches/ended/retry', data={'csrf': csrf})
    assert done.status_code == 303
    assert batches.called('retry') == [{'batch_id': 'ended'}]
    assert done.headers['location'] == \
        '/batches/ended?notice=2+failed+items+queued+again'
    page = signed.get(done.headers['location'])
    assert '<p class="notice" id="notice">2 failed items queued again</p>' \
        in page.text


def test_cancel_with_the_csrf_field_reaches_the_conductor(signed, batches):
    sign_in(signed)
    page = signed.get('/batches/busy')
    done = signed.post('/batches/busy/cancel',
                       data={'csrf': csrf_of(page.text)})
    assert done.status_code == 303
    assert batches.called('cancel') == [{'batch_id': 'busy'}]
    assert signed.get(done.headers['location']).status_code == 200
    assert 'cancelled%3A+2+items+will+not+run%3B+1+running+finish' in \
        done.headers['location']


def test_a_csrf_field_of_another_session_is_refused(open_dashboard,
                                                    batches):
    _, alice = open_dashboard(token=TOKEN)
    sign_in(alice)
    csrf = csrf_of(alice.get('/batches/busy').text)
    with httpx.Client(base_url=str(alice.base_url)) as mallory:
        sign_in(mallory)
        refused = mallory.post('/batches/busy/cancel', data={'csrf': csrf})
    assert refused.status_code == 403
    assert acted(batches) == []


def test_a_post_from_another_site_is_refused(signed, batches):
    sign_in(signed)
    csrf = csrf_of(signed.get('/batches/busy').text)
    for headers in ({'origin': 'http://evil.example'},
                    {'origin': 'null'},
                    {'referer': 'http://evil.example/page'},
                    {'origin': 'http://evil.example',
                     'authorization': 'Bearer ' + TOKEN}):
        refused = signed.post('/batches/busy/cancel', data={'csrf': csrf},
                              headers=headers)
        assert refused.status_code == 403, headers
        assert 'refused: the form was posted from another site' in \
            refused.text
    assert acted(batches) == []
    # The same form from the dashboard's own origin passes.
    own = str(signed.base_url).rstrip('/')
    assert signed.post('/batches/busy/cancel', data={'csrf': csrf},
                       headers={'origin': own}).status_code == 303
    assert batches.called('cancel') == [{'batch_id': 'busy'}]


def test_a_script_acts_with_its_bearer_token(signed, batches):
    done = signed.post('/batches/ended/retry', headers={
        'authorization': 'Bearer ' + TOKEN})
    assert done.status_code == 303
    assert batches.called('retry') == [{'batch_id': 'ended'}]


@pytest.mark.parametrize('target', [
    '//evil.example', '//evil.example/x', 'https://evil.example/',
    '/\\evil.example', 'evil.example', '\\\\evil.example'])
def test_sign_in_never_sends_people_to_another_site(signed, target):
    form = signed.get('/login', params={'next': target})
    assert form.status_code == 200
    assert 'name="next" value="/"' in form.text
    answer = signed.post('/login', data={'token': TOKEN, 'next': target})
    assert answer.status_code == 303
    assert answer.headers['location'] == '/'


def test_without_a_token_the_sign_in_page_goes_home(web):
    answer = web.get('/login', params={'next': '//evil.example'})
    assert answer.status_code == 303
    assert answer.headers['location'] == '/'


def test_sign_out_clears_the_session(signed, batches):
    sign_in(signed)
    assert signed.get('/').status_code == 200
    answer = signed.post('/logout')
    assert answer.status_code == 303
    assert answer.headers['location'] == '/login'
    cookie = answer.headers['set-cookie'].lower()
    assert cookie.startswith(COOKIE + '=')
    assert 'max-age=0' in cookie
    assert COOKIE not in signed.cookies
    assert signed.get('/').status_code == 401


def test_sign_in_brings_people_back_to_the_filtered_page(signed, batches):
    """The sign-in redirect kept the path only: after signing in, a link
    to the failed items of a batch showed all of them."""
    wanted = '/batches/ended?state=failed&offset=3'
    page = signed.get(wanted, headers=HTML)
    where = urllib.parse.urlsplit(page.headers['location'])
    assert urllib.parse.parse_qs(where.query) == {'next': [wanted]}
    back = signed.post('/login', data={'token': TOKEN, 'next': wanted})
    assert back.headers['location'] == wanted
