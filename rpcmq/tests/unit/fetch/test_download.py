"""Downloads against the real local image server (no mocks)."""

import hashlib
import json
import logging
import os
import pickle
import socket
import time
import urllib.parse

import pytest

from rpcmq.conductor.worker import is_permanent
from rpcmq.fetch import (
    BadURL,
    DownloadFailed,
    Fetcher,
    FetchOptions,
    NotAnImage,
    TooLarge,
    errors,
)
from rpcmq.fetch.guard import Deadline
from rpcmq.rpc import wire
from rpcmq.testing.imageserver import REDIRECT_PASSWORD, make_image


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _sha1(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _files(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.mark.parametrize('ext,fmt,file_ext,ctype', [
    ('png', 'png', 'png', 'image/png'),
    ('jpg', 'jpeg', 'jpg', 'image/jpeg'),
    ('webp', 'webp', 'webp', 'image/webp'),
    ('gif', 'gif', 'gif', 'image/gif'),
])
def test_image_formats(server, fetcher, spool, ext, fmt, file_ext, ctype):
    url = server.url('/img/pic.%s?w=120&h=80' % ext)
    expected = make_image(ext, 'pic', 120, 80)

    result = fetcher.download(url, spool)

    assert (result.format, result.width, result.height) == (fmt, 120, 80)
    assert result.size == len(expected)
    assert result.sha256 == _sha256(expected)
    assert result.content_type == ctype
    assert result.url_sha1 == _sha1(url)
    assert result.attempts == 1
    assert result.path == os.path.join(spool, '%s.%s' % (_sha1(url),
                                                         file_ext))
    with open(result.path, 'rb') as f:
        assert f.read() == expected
    assert _files(spool) == [os.path.basename(result.path)]


def test_content_type_is_not_trusted(server, fetcher, spool):
    url = server.url('/img/octet.png?ct=application/octet-stream')
    result = fetcher.download(url, spool, name='x.img')
    assert result.format == 'png'
    assert result.path == os.path.join(spool, 'x.img')


def test_30mb_image_is_streamed_to_disk(server, fetcher, spool):
    result = fetcher.download(server.url('/big.png'), spool)
    expected = make_image('png', 'big', kb=30 * 1024)
    assert result.size == len(expected) > 30 * 1000 * 1000
    assert result.sha256 == _sha256(expected)
    assert result.format == 'png'
    assert os.path.getsize(result.path) == result.size


def test_a_small_image_can_stay_in_memory(server, fetcher, spool):
    url = server.url('/img/small.jpg?kb=50')
    expected = make_image('jpg', 'small', kb=50)

    result = fetcher.download(url, spool, memory_max=100 * 1024)

    assert (result.data, result.path) == (expected, None)
    assert result.sha256 == _sha256(expected)
    assert (result.format, result.size) == ('jpeg', len(expected))
    assert _files(spool) == []


def test_an_image_over_memory_max_goes_to_disk(server, fetcher, spool):
    result = fetcher.download(server.url('/img/over.jpg?kb=50'), spool,
                              memory_max=10 * 1024)
    assert result.data is None
    assert os.path.getsize(result.path) == result.size > 10 * 1024


def test_a_page_kept_in_memory_is_still_not_an_image(server, fetcher, spool):
    with pytest.raises(NotAnImage) as info:
        fetcher.download(server.url('/html'), spool, memory_max=1024 * 1024)
    assert 'HTML document' in info.value.found
    assert _files(spool) == []


def test_slow_trickle_completes(server, make_fetcher, spool):
    fetcher = make_fetcher(read_timeout=2.0)
    start = time.monotonic()
    result = fetcher.download(
        server.url('/slow/trickle.png?delay=0.05&chunks=5'), spool)
    assert time.monotonic() - start >= 0.2
    assert result.size == len(make_image('png', 'trickle'))


def test_too_slow_server_fails_after_retries(server, make_fetcher, spool):
    fetcher = make_fetcher(read_timeout=0.2, download_retries=1)
    path = '/slow/stall.png?delay=2&chunks=3'
    with pytest.raises(DownloadFailed) as info:
        fetcher.download(server.url(path), spool)
    assert info.value.attempts == 2
    assert 'read_timeout' in str(info.value)
    assert server.count(path) == 2
    assert _files(spool) == []


def test_total_timeout_is_not_retried(server, make_fetcher, spool):
    fetcher = make_fetcher(total_timeout=0.2, read_timeout=2.0)
    path = '/slow/long.png?delay=0.15&chunks=4'
    with pytest.raises(DownloadFailed, match='total_timeout') as info:
        fetcher.download(server.url(path), spool)
    assert info.value.attempts == 1
    assert server.count(path) == 1
    assert _files(spool) == []


# Each drip would take 8-10 s to finish; total_timeout must cut it at 1 s.
@pytest.mark.parametrize('path', [
    '/drip?delay=0.25&bytes=40',                 # body, Content-Length
    '/drip?delay=0.25&bytes=40&mode=close',      # body ended by closing
    '/drip?delay=0.1&bytes=4&mode=headers',      # status line and headers
    '/redirect/drip?delay=0.25&bytes=40',        # after a redirect hop
    # One full chunk, then a stall: cut, it ends like a complete body.
    '/drip?delay=10&bytes=1025&first=1024&mode=close',
])
def test_total_timeout_bounds_a_dripping_server(server, make_fetcher,
                                                spool, path):
    fetcher = make_fetcher(total_timeout=1.0, read_timeout=20.0,
                           download_retries=2, chunk_size=1024)
    # A kept-alive connection: the drip's request reuses it.
    fetcher.download(server.url('/img/warm.png'), spool, name='warm.png')
    start = time.monotonic()
    with pytest.raises(DownloadFailed, match='total_timeout') as info:
        fetcher.download(server.url(path), spool)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 3.0, 'took %.1fs' % elapsed
    assert info.value.attempts == 1
    assert server.count('/drip') == 1
    assert _files(spool) == ['warm.png']
    # The pool is not spoilt for the next download.
    assert fetcher.download(server.url('/img/next.png'), spool).size > 0


# The deadline's watchdog on a socket pair; expire() is what its timer
# calls, so these need no waiting.

@pytest.fixture
def pair():
    a, b = socket.socketpair()
    for sock in a, b:
        sock.settimeout(10)   # a broken watchdog fails, it does not hang
    with a, b:
        yield a, b


def test_deadline_shuts_down_the_socket_it_watches(pair):
    a, _b = pair
    with Deadline(60) as deadline:
        deadline.attach(a)
        deadline.expire()
        assert deadline.expired
        assert a.recv(1) == b''


def test_deadline_reaches_the_socket_after_it_is_rewrapped(pair):
    # As when urllib3 wraps a new connection's socket in TLS.
    a, _b = pair
    with Deadline(60) as deadline:
        deadline.attach(a)
        with socket.socket(fileno=a.detach()) as wrapped:
            wrapped.settimeout(10)
            deadline.expire()
            assert wrapped.recv(1) == b''


def test_deadline_leaves_detached_and_stopped_sockets_alone(pair):
    a, b = pair
    with Deadline(60) as deadline:
        deadline.attach(a)
        deadline.detach()
        deadline.expire()
    with Deadline(60) as deadline:
        deadline.attach(a)
    deadline.expire()
    b.sendall(b'x')
    assert a.recv(1) == b'x'


def test_socket_attached_after_the_deadline_is_shut_down_at_once(pair):
    a, _b = pair
    with Deadline(60) as deadline:
        deadline.expire()
        deadline.attach(a)
        assert a.recv(1) == b''


def test_deadline_timer_wakes_a_blocked_read(pair):
    a, _b = pair
    start = time.monotonic()
    with Deadline(0.5) as deadline:
        deadline.attach(a)
        assert a.recv(1) == b''
        assert deadline.expired
    assert time.monotonic() - start < 0.5 + 3.0


def test_500_then_200_succeeds_after_retries(server, fetcher, spool):
    path = '/flaky/twice.png?fail=2'
    result = fetcher.download(server.url(path), spool)
    assert result.attempts == 3
    assert server.count(path) == 3
    assert result.sha256 == _sha256(make_image('png', 'twice'))


def test_body_cut_mid_stream_is_retried(server, fetcher, spool):
    path = '/flaky/cut.jpg?fail=1&mode=cut'
    result = fetcher.download(server.url(path), spool)
    assert result.attempts == 2
    assert server.count(path) == 2
    assert result.sha256 == _sha256(make_image('jpg', 'cut'))
    assert _files(spool) == [os.path.basename(result.path)]


def test_5xx_gives_up_after_download_retries(server, make_fetcher, spool):
    fetcher = make_fetcher(download_retries=2)
    path = '/flaky/down.png?fail=10'
    with pytest.raises(DownloadFailed) as info:
        fetcher.download(server.url(path), spool)
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert server.count(path) == 3


def test_404_is_not_retried(server, fetcher, spool):
    with pytest.raises(DownloadFailed) as info:
        fetcher.download(server.url('/status/404'), spool)
    assert (info.value.status, info.value.attempts) == (404, 1)
    assert '404' in str(info.value)
    assert server.count('/status/404') == 1


def test_connection_refused_is_retried(make_fetcher, spool):
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    fetcher = make_fetcher(download_retries=2)
    with pytest.raises(DownloadFailed) as info:
        fetcher.download('http://127.0.0.1:%d/x.png' % port, spool)
    assert (info.value.status, info.value.attempts) == (None, 3)


def test_html_is_not_an_image(server, fetcher, spool):
    url = server.url('/html')
    with pytest.raises(NotAnImage) as info:
        fetcher.download(url, spool)
    assert url in str(info.value)
    assert 'HTML document' in info.value.found
    assert 'text/html' in info.value.found
    assert _files(spool) == []


def test_body_longer_than_declared_length_is_cut(server, make_fetcher,
                                                 spool):
    # Content-Length: 1024 plus Transfer-Encoding: chunked and 64 MiB.
    fetcher = make_fetcher(max_image_bytes=1024 * 1024)
    with pytest.raises(TooLarge) as info:
        fetcher.download(server.url('/liar'), spool)
    assert info.value.limit == 1024 * 1024
    assert info.value.size > 1024 * 1024
    assert info.value.size < 2 * 1024 * 1024
    assert _files(spool) == []


def test_bytes_beyond_content_length_are_never_read(server, fetcher, spool):
    # A plain short Content-Length: the client stops there, so the image is
    # truncated and refused.
    with pytest.raises(NotAnImage, match='truncated') as info:
        fetcher.download(server.url('/liar?mode=length'), spool)
    assert 'PNG' in info.value.found
    assert _files(spool) == []


def test_endless_body_stops_at_limit(server, make_fetcher, spool):
    fetcher = make_fetcher(max_image_bytes=2 * 1024 * 1024)
    with pytest.raises(TooLarge) as info:
        fetcher.download(server.url('/endless'), spool)
    assert info.value.unit == 'bytes'
    assert 'no length' in str(info.value)
    assert _files(spool) == []


def test_declared_length_over_limit_refused_at_once(server, make_fetcher,
                                                    spool):
    fetcher = make_fetcher(max_image_bytes=50 * 1024)
    path = '/img/declared.png?kb=200'
    with pytest.raises(TooLarge, match='Content-Length') as info:
        fetcher.download(server.url(path), spool)
    assert info.value.size == len(make_image('png', 'declared', kb=200))
    assert server.count(path) == 1
    assert _files(spool) == []


def test_too_many_pixels(server, make_fetcher, spool):
    fetcher = make_fetcher(max_image_pixels=1000)
    with pytest.raises(TooLarge, match='pixels') as info:
        fetcher.download(server.url('/img/wide.png?w=100&h=20'), spool)
    assert (info.value.size, info.value.unit) == (2000, 'pixels')
    assert _files(spool) == []


def test_format_outside_image_formats(server, make_fetcher, spool):
    fetcher = make_fetcher(image_formats=['jpeg'])
    with pytest.raises(NotAnImage):
        fetcher.download(server.url('/img/nope.png'), spool)
    assert _files(spool) == []


def test_redirect_is_followed(server, fetcher, spool):
    url = server.url('/redirect/img/moved.png?w=10&h=10')
    result = fetcher.download(url, spool)
    assert result.final_url == server.url('/img/moved.png?w=10&h=10')
    assert result.url_sha1 == _sha1(url)
    assert (result.width, result.height) == (10, 10)


def test_redirect_loop_fails(server, make_fetcher, spool):
    fetcher = make_fetcher(max_redirects=3)
    with pytest.raises(DownloadFailed, match='redirects') as info:
        fetcher.download(server.url('/loop'), spool)
    assert info.value.attempts == 1
    assert info.value.status == 302


@pytest.mark.parametrize('url', [
    'ftp://example.com/a.jpg', 'file:///etc/passwd', 'not a url', '',
    'http://', '//example.com/a.jpg', 'http://exa mple.com/a.jpg',
    'http://example.com:99999/a.jpg', None,
])
def test_bad_urls(fetcher, spool, url):
    with pytest.raises(BadURL) as info:
        fetcher.download(url, spool)
    assert 'http' in str(info.value)
    assert _files(spool) == []


def test_invalid_internationalized_host_is_a_bad_url(fetcher, spool,
                                                    connects):
    with pytest.raises(BadURL, match='IDNA'):
        fetcher.download('http://\N{SNOWMAN}.example/a.jpg', spool)
    assert connects == []


def _redirect_to(server, location, pad=0):
    return server.url('/redirect-to?' + urllib.parse.urlencode(
        {'url': location, 'pad': pad}))


@pytest.mark.parametrize('location', [
    'file:///etc/passwd', 'gopher://127.0.0.1:70/_HELO', 'ftp://h/a.jpg',
    'FILE:///etc/passwd', 'data:image/png;base64,iVBORw0KGgo=',
    'javascript:alert(1)', 'dict://127.0.0.1:11211/stat',
])
def test_redirect_to_another_scheme_is_a_bad_url(server, make_fetcher,
                                                 spool, location):
    fetcher = make_fetcher(download_retries=2)
    url = _redirect_to(server, location)
    with pytest.raises(BadURL, match=r'redirects \(302\) to') as info:
        fetcher.download(url, spool)
    assert info.value.url == url
    assert location.split(':')[0] in str(info.value)
    assert is_permanent(info.value)       # the conductor does not retry
    assert server.count('/redirect-to') == 1
    assert _files(spool) == []


def test_redirect_with_user_info_is_refused(server, fetcher, spool, caplog,
                                            connects):
    caplog.set_level(logging.DEBUG)
    url = server.url('/redirect-userinfo/img/creds.png')
    with pytest.raises(BadURL, match='user info') as info:
        fetcher.download(url, spool)
    assert info.value.url == url
    assert "to 'http://***@127.0.0.1:%d/img/creds.png'" % server.port \
        in str(info.value)
    for text in (str(info.value), json.dumps(info.value.kwargs),
                 caplog.text):
        assert REDIRECT_PASSWORD not in text
    assert server.count('/redirect-userinfo/img/creds.png') == 1
    assert server.count('/img/creds.png') == 0
    assert set(connects) == {'127.0.0.1'}
    assert _files(spool) == []


def test_redirect_to_an_overlong_url_is_refused(server, fetcher, spool,
                                                caplog):
    caplog.set_level(logging.DEBUG)
    url = _redirect_to(server, server.url('/img/padded.png?pad='), pad=9000)
    with pytest.raises(BadURL, match='max_url_length') as info:
        fetcher.download(url, spool)
    assert info.value.url == url
    assert len(str(info.value)) < 600
    assert max(len(r.getMessage()) for r in caplog.records) < 1000
    assert server.count('/img/padded.png') == 0


@pytest.mark.parametrize('host', ['a' * 64 + '.example.com',
                                  '.'.join(['a' * 63] * 4) + '.com'])
def test_redirect_to_an_overlong_host_name_is_refused(
        server, make_fetcher, spool, lookups, host):
    fetcher = make_fetcher(download_retries=1)
    url = _redirect_to(server, 'http://%s/x.png' % host)
    with pytest.raises(BadURL, match='host name') as info:
        fetcher.download(url, spool)
    assert info.value.url == url
    assert server.count('/redirect-to') == 1
    assert host not in lookups


def test_backoff_doubles_with_jitter_and_cap():
    fetcher = Fetcher(FetchOptions(backoff=1.0, backoff_max=5.0))
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = {fetcher.backoff(attempt) for _ in range(20)}
        assert all(base / 2 <= d <= base for d in delays)
        assert len(delays) > 1


def _errors(server, make_fetcher, spool):
    fetcher = make_fetcher(download_retries=0, max_image_bytes=64 * 1024)
    for url in ['ftp://x/y.jpg', server.url('/status/404'),
                server.url('/html'), server.url('/endless'),
                server.url('/liar?mode=length')]:
        with pytest.raises(errors.FetchError) as info:
            fetcher.download(url, spool)
        yield info.value


def test_errors_rebuild_from_their_fields(server, make_fetcher, spool):
    seen = set()
    for err in _errors(server, make_fetcher, spool):
        seen.add(type(err))
        assert json.loads(json.dumps(err.kwargs)) == err.kwargs
        copy = type(err)(err.message, **err.kwargs)
        assert (copy.message, copy.kwargs) == (err.message, err.kwargs)
        assert str(pickle.loads(pickle.dumps(err))) == str(err)
        # Rebuilt from fields alone, the message is the same sentence.
        assert type(err)(**err.kwargs).kwargs == err.kwargs
        # Over the wire the caller gets the same type and fields.
        with pytest.raises(type(err)) as remote:
            wire.decode_reply(wire.failure_reply(err))
        assert remote.value.kwargs == err.kwargs
        assert str(remote.value) == str(err)
    assert seen == {BadURL, DownloadFailed, NotAnImage, TooLarge}


def test_error_messages_from_fields_alone():
    err = errors.DownloadFailed(url='http://h/x', status=503, attempts=4,
                                reason='the server answered 503')
    assert str(err) == ('downloading http://h/x failed after 4 attempt(s): '
                        'the server answered 503')
    err = errors.SpoolNotFound(spool_id='ab')
    assert 'ab' in str(err) and 'no such spooled file' in str(err)
