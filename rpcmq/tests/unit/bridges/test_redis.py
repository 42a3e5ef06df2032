"""Task entries of the Redis bridge: parsing, names, replies."""

import json

import pytest

from rpcmq.bridges.common import InvalidInput
from rpcmq.bridges.redis import (
    derive_name,
    item_reply,
    parse_entry,
    rejection_report,
)


def entry(task_id='t1', infos=None, **extra):
    infos = [{'fn': 'a', 'url': 'http://h/img/a.jpg'}] if infos is None \
        else infos
    return json.dumps(dict({'task_id': task_id, 'task_info': infos},
                           **extra)).encode()


@pytest.mark.parametrize('fn,url,name', [
    ('a', 'http://h/img/a.jpg', 'a.jpg'),
    ('a', 'http://h/img/b.png?kb=20', 'a.png'),  # the query is no ext
    ('a.gif', 'http://h/img/b.png', 'a.gif'),  # fn has one: kept
    ('v1.2 cover', 'http://h/b.png', 'v1.2 cover'),  # any dot counts
    ('a', 'http://h/img/b', 'a'),  # none: the conductor adds the format
    ('a', 'http://h.com', 'a'),  # the host is no extension
    ('a', 'http://h/img.d/b', 'a'),  # only the last segment counts
    ('a', 'http://h/x/a.jpg!preview', 'a.jpg!preview'),
])
def test_derive_name_follows_the_asyncio_downloader(fn, url, name):
    assert derive_name(fn, url) == name


def test_parse_entry_builds_the_batch():
    task = parse_entry(entry('5f3a', [
        {'fn': 'cover', 'url': ' http://h/img/a.jpg '},
        {'fn': 'back.png', 'url': 'http://h/img/b.webp'},
        {'fn': 7, 'url': 'http://h/img/c'}]))
    assert task.task_id == task.batch_id == '5f3a'
    assert task.items == [
        {'url': 'http://h/img/a.jpg', 'name': '5f3a/cover.jpg'},
        {'url': 'http://h/img/b.webp', 'name': '5f3a/back.png'},
        {'url': 'http://h/img/c', 'name': '5f3a/7'}]
    assert task.fns == ['cover', 'back.png', '7']


def test_parse_entry_numeric_task_id_and_template():
    task = parse_entry(entry(12345), name_template='{fn}')
    assert task.task_id == '12345' and task.items[0]['name'] == 'a.jpg'


def test_parse_entry_odd_task_id_gets_a_stable_batch_id():
    task = parse_entry(entry('下载/1'))
    assert task.task_id == '下载/1'
    assert task.batch_id.startswith('t-') and '/' not in task.batch_id
    assert task.items[0]['name'] == task.batch_id + '/a.jpg'
    assert parse_entry(entry('下载/1')).batch_id == task.batch_id


@pytest.mark.parametrize('raw,reason', [
    (b'not json', 'not JSON'),
    (b'\xff\xfe{', 'not'),
    (b'[1, 2]', 'must be a JSON object'),
    (b'{"task_info": []}', 'no task_id'),
    (entry(''), 'no task_id'),
    (entry(None), 'no task_id'),
])
def test_parse_entry_rejects_without_task_id(raw, reason):
    with pytest.raises(InvalidInput) as err:
        parse_entry(raw)
    assert reason in err.value.reason
    assert err.value.task_id is None


@pytest.mark.parametrize('infos,reason', [
    ([], 'non-empty list'),
    ({'fn': 'a', 'url': 'http://h/a.jpg'}, 'non-empty list'),
    (['http://h/a.jpg'], 'task_info[0] must be an object'),
    ([{'fn': 'a'}], 'task_info[0].url'),
    ([{'fn': 'a', 'url': 'not a url'}], 'task_info[0].url'),
    ([{'url': 'http://h/a.jpg'}], 'needs "fn"'),
    ([{'fn': ' ', 'url': 'http://h/a.jpg'}], 'needs "fn"'),
    ([{'fn': '../a', 'url': 'http://h/a.jpg'}], 'not a usable file name'),
    ([{'fn': '..', 'url': 'http://h/a.jpg'}], 'not a usable file name'),
    ([{'fn': 'a', 'url': 'http://h/a.jpg'},
      {'fn': 'a.jpg', 'url': 'http://h/b.jpg'}], 'both be stored'),
])
def test_parse_entry_rejects_bad_task_info_with_the_task_id(infos, reason):
    with pytest.raises(InvalidInput) as err:
        parse_entry(entry('t9', infos))
    assert reason in err.value.reason
    assert err.value.task_id == 't9'


def test_item_reply_done_pushes_the_original_fn():
    outcome = {'idx': 1, 'url': 'http://h/b.jpg', 'name': 't1/b.jpg',
               'state': 'done', 'attempts': 1, 'error': None,
               'result': {'key': 't1/b.jpg'}}
    assert item_reply(outcome, ['a', 'b']) == ('done:1', 'b', None)


def test_item_reply_failed_is_a_report_for_the_errors_list():
    outcome = {'idx': 0, 'url': 'http://h/404', 'name': 't1/a',
               'state': 'failed', 'attempts': 4, 'result': None,
               'error': {'type': 'DownloadFailed', 'message': '404'}}
    member, fn, report = item_reply(outcome, ['a'])
    assert (member, fn) == ('failed:0:4', None)
    assert json.loads(report) == {
        'fn': 'a', 'url': 'http://h/404', 'state': 'failed', 'attempts': 4,
        'error': {'type': 'DownloadFailed', 'message': '404'}}
    cancelled = dict(outcome, state='cancelled', error=None, attempts=0)
    assert item_reply(cancelled, ['a'])[0] == 'cancelled:0:0'


def test_rejection_report_has_the_failure_shape():
    report = json.loads(rejection_report('the entry has no task_info'))
    assert report['state'] == 'rejected' and report['fn'] is None
    assert report['error'] == {'type': 'InvalidEntry',
                               'message': 'the entry has no task_info'}


NESTED = b'[' * 100000 + b']' * 100000


@pytest.mark.parametrize('raw,reason,task_id', [
    (NESTED, 'the entry is nested too deeply', None),
    (b'{"task_id": "t", "task_info": ' + NESTED + b'}',
     'the entry is nested too deeply', None),
    (b'{"task_id": "\\ud800", "task_info": [{"fn": "a", '
     b'"url": "http://h/a.jpg"}]}',
     'the task_id holds a lone UTF-16 surrogate', None),
    (entry('t', [{'fn': '\udfff', 'url': 'http://h/a.jpg'}]),
     'task_info[0]: fn holds a lone UTF-16 surrogate', 't'),
    (entry('t', [{'fn': 'a', 'url': 'http://h/\ud800.jpg'}]),
     "task_info[0].url 'http://h/\\ud800.jpg' holds a lone UTF-16 surrogate",
     't'),
    (entry('t', [{'fn': 'a', 'url': 'http://h/' + 'x' * 2 ** 24}]),
     'bytes, more than the %d a bridge takes' % 2 ** 24, None),
], ids=['nested', 'nested-info', 'surrogate-task-id', 'surrogate-fn',
        'surrogate-url', 'huge'])
def test_parse_entry_rejects_hostile_entries(raw, reason, task_id):
    with pytest.raises(InvalidInput) as err:
        parse_entry(raw)
    assert reason in err.value.reason
    assert err.value.task_id == task_id
    assert len(err.value.reason) <= 1003


@pytest.mark.parametrize('outcome', [
    1, 'x', None, [], {}, {'idx': 5, 'state': 'done', 'name': {'a': 1}},
    {'idx': True, 'state': 'done'}, {'idx': '0', 'state': 'done'},
    {'idx': -1, 'state': 'failed'}])
def test_item_reply_skips_what_is_no_item_of_the_task(outcome):
    assert item_reply(outcome, ['a']) is None


def test_item_reply_fields_of_odd_types_become_text():
    member, fn, report = item_reply(
        {'idx': 0, 'state': ['x'], 'attempts': {'n': 1},
         'error': '\ud800'}, ['a'])
    assert (member, fn) == ('None:0:None', None)
    member.encode('utf-8')
    assert json.loads(report)['error'] == '\ud800'
    member, _, _ = item_reply({'idx': 0, 'state': 'fa\udfffiled'}, ['a'])
    assert member == 'fa?iled:0:None'


@pytest.mark.parametrize('fns, clash', [
    (['cover', 'cover.png'], (0, 1, 'cover.png')),
    (['cover.jpg', 'x', 'cover'], (0, 2, 'cover.jpg')),
    (['cover.png', 'cover.jpg'], None),  # both keep their names
    (['cover', 'covers.png', 'cover2'], None),
])
def test_a_bare_name_clashes_with_itself_plus_an_extension(fns, clash):
    raw = json.dumps({'task_id': 't', 'task_info': [
        {'fn': fn, 'url': 'http://h/img?id=%d' % n}
        for n, fn in enumerate(fns)]})
    if clash is None:
        assert len(parse_entry(raw).items) == len(fns)
        return
    with pytest.raises(InvalidInput) as raised:
        parse_entry(raw)
    assert raised.value.reason.startswith(
        "task_info[%d] and [%d] may both be stored as 't/%s'" % clash)
