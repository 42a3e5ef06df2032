"""Shared checks of the bridges: URLs, keys, batch ids, backoff."""

import threading

import pytest

from rpcmq.bridges.common import (
    BATCH_ID_RE,
    Backoff,
    InvalidInput,
    batch_id_for,
    check_url,
    is_safe_key,
)


@pytest.mark.parametrize('url', [
    'http://img.example.com/a.jpg', 'https://x.oss.com/w/1/a.jpg!preview',
    '  http://127.0.0.1:8080/img/a.png?kb=20  '])
def test_check_url_accepts_http_urls(url):
    assert check_url(url) == url.strip()


@pytest.mark.parametrize('url', [
    None, '', '   ', 42, 'ftp://host/a.jpg', 'a.jpg', '/img/a.jpg',
    'http://', 'http:///a.jpg', 'http://host/a b.jpg', 'http://[::1/a'])
def test_check_url_rejects_the_rest(url):
    with pytest.raises(InvalidInput) as err:
        check_url(url, 'task_info[0].url')
    assert 'task_info[0].url' in err.value.reason


@pytest.mark.parametrize('key,ok', [
    ('a.jpg', True), ('t1/a.jpg', True), ('w/1/a.jpg!preview', True),
    ('', False), ('/a.jpg', False), ('a//b', False), ('a/../b', False),
    ('./a', False), ('a\\b', False), ('a\nb', False), ('x/', False),
    ('.rpcmq-tmp-x', False), ('é' * 600, False), (None, False)])
def test_is_safe_key(key, ok):
    assert is_safe_key(key) is ok


def test_batch_id_for_keeps_valid_ids_and_hashes_others():
    assert batch_id_for('5f3a9c0e1b2d4') == '5f3a9c0e1b2d4'
    assert batch_id_for('task:2021-06-10_1') == 'task:2021-06-10_1'
    for bad in ('任务1', 'a/b', '_x', 'x' * 65, 'a b'):
        derived = batch_id_for(bad, 't-')
        assert derived.startswith('t-') and BATCH_ID_RE.match(derived)
        assert derived == batch_id_for(bad, 't-')
    assert batch_id_for('a/b') != batch_id_for('a/c')


def test_backoff_doubles_up_to_the_limit_and_stops():
    stop = threading.Event()
    backoff = Backoff(stop, first=0.001, longest=0.004)
    delays = []
    for _ in range(4):
        delays.append(backoff.delay)
        assert backoff.wait()
    assert delays == [0.001, 0.002, 0.004, 0.004]
    backoff.reset()
    assert backoff.delay == 0.001
    stop.set()
    assert backoff.wait() is False
