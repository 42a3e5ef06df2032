"""One hostile Redis entry or odd batch event costs only itself: the
Redis bridge in this process on memory://, a stand-in conductor behind the
real RPC client, the real Redis."""

import base64
import gzip
import json
import uuid

import pytest

from rpcmq.tests.functional.conftest import REDIS_URL, require
from rpcmq.tests.functional.fixtures import wait_until

redis = pytest.importorskip('redis')


NESTED = '[' * 100000 + ']' * 100000


class StandInConductor:
    """``batch.submit`` that keeps what it is given; refuses ``refused``,
    and, like the real conductor, an existing batch id with other items
    (the same items again are a no-op)."""

    def __init__(self):
        from rpcmq.target import Target
        self.target = Target(namespace='batch', version='1.0')
        self.batches = {}

    def submit(self, ctxt, items, batch_id=None):
        from rpcmq.conductor.errors import InvalidBatch
        from rpcmq.conductor.sql import other_items
        if batch_id == 'refused':
            raise InvalidBatch(reason='no batch may be called refused')
        stored = self.batches.setdefault(batch_id, items)
        if stored != items:
            raise other_items(batch_id, len(stored), len(items))
        return batch_id


class InProcessRedisBridge:

    def __init__(self):
        from rpcmq.bridges.redis import RedisBridge
        from rpcmq.rpc.server import get_rpc_server
        from rpcmq.target import Target
        from rpcmq.testing.server import make_conf
        from rpcmq.transport import get_transport

        self.ns = 'brt%s' % uuid.uuid4().hex[:10]
        self.tasks = self.ns + ':tasks'
        conf = make_conf(**{
            'control_exchange': self.ns,
            'notification_exchange': self.ns + '_notify',
            'conductor.topic': self.ns + '_conductor',
            'redis_bridge.url': REDIS_URL, 'redis_bridge.tasks_list':
            self.tasks, 'redis_bridge.reply_prefix': self.ns + '_resp',
            'redis_bridge.pool': self.ns + '-pool',
            'redis_bridge.submit_timeout': 5,
            'redis_bridge.retry_interval': 0.05,
            'redis_bridge.retry_interval_max': 0.2})
        self.transport = get_transport(conf, 'memory://')
        self.conductor = StandInConductor()
        self.server = get_rpc_server(self.transport, Target(
            topic=self.ns + '_conductor', server='c'), [self.conductor])
        self.server.start()
        self.bridge = RedisBridge(conf, self.transport)
        self.rdb = self.bridge.redis
        self.bridge.start()

    def push(self, entry):
        self.rdb.lpush(self.tasks, entry)

    def invalid(self):
        return [json.loads(r) for r in
                self.rdb.lrange(self.tasks + '_invalid', 0, -1)][::-1]

    def replies(self, task_id, suffix=''):
        key = '%s_resp_%s%s' % (self.ns, task_id, suffix)
        return [r.decode() for r in self.rdb.lrange(key, 0, -1)][::-1]

    def notify(self, event_type, payload):
        from rpcmq.notify import Notifier
        Notifier(self.transport, 'conductor').info({}, event_type, payload)

    def notify_raw(self, body, routing_key='batch.item'):
        from rpcmq.notify.notifier import notification_exchange
        exchange = notification_exchange(self.transport.conf)
        self.transport.driver.publish(body, exchange, routing_key,
                                      declare=(exchange,))

    def close(self):
        self.bridge.stop()
        self.bridge.wait(10)
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()
        keys = list(self.rdb.scan_iter(self.ns + '*'))
        if keys:
            self.rdb.delete(*keys)
        self.rdb.close()


@pytest.fixture
def inproc():
    require('redis')
    stack = InProcessRedisBridge()
    yield stack
    stack.close()


def good_entry(task_id, fn='a'):
    return json.dumps({'task_id': task_id, 'task_info': [
        {'fn': fn, 'url': 'http://h/%s.jpg' % fn}]})


HUGE_URL = 'http://h/' + 'x' * (16 * 1024 * 1024)


@pytest.mark.parametrize('entry,task_id,reason', [
    ('{"task_id": "n", "task_info": %s}' % NESTED, None,
     'the entry is nested too deeply'),
    (NESTED, None, 'the entry is nested too deeply'),
    ('{"task_id": "\\ud800", "task_info": [{"fn": "a", '
     '"url": "http://h/a.jpg"}]}', None,
     'the task_id holds a lone UTF-16 surrogate'),
    ('{"task_id": "s", "task_info": [{"fn": "a", '
     '"url": "http://h/\\ud800.jpg"}]}', 's',
     "task_info[0].url 'http://h/\\ud800.jpg' holds a lone UTF-16 "
     "surrogate"),
    ('{"task_id": "f", "task_info": [{"fn": "\\udfff", '
     '"url": "http://h/a.jpg"}]}', 'f',
     'task_info[0]: fn holds a lone UTF-16 surrogate'),
    (json.dumps({'task_id': 'huge', 'task_info': [
        {'fn': 'a', 'url': HUGE_URL}]}), None, 'bytes, more than the'),
    # 'cover' (no extension in its URL either) is stored as cover.<the
    # image's format>: one image was overwritten by the other.
    (json.dumps({'task_id': 'c', 'task_info': [
        {'fn': 'cover', 'url': 'http://h/img?id=1'},
        {'fn': 'cover.png', 'url': 'http://h/second.png'}]}), 'c',
     "task_info[0] and [1] may both be stored as 'c/cover.png'"),
], ids=['nested-info', 'nested', 'surrogate-task-id', 'surrogate-url',
        'surrogate-fn', 'huge', 'bare-name-and-its-extension'])
def test_redis_hostile_entry_is_set_aside(inproc, entry, task_id, reason):
    tid = inproc.ns + '-good'
    inproc.push(entry)
    inproc.push(good_entry(tid))
    wait_until(lambda: tid in inproc.conductor.batches, timeout=30,
               what='the entry after the hostile one')
    (record,) = inproc.invalid()
    assert reason in record['reason']
    assert record.get('truncated') is (True if len(entry) > 2 ** 24
                                       else None)
    assert inproc.rdb.llen(inproc.tasks + ':processing') == 0
    if task_id is not None:  # the producer's wait ends
        assert inproc.replies(task_id) == ['start', 'end']
        assert json.loads(inproc.replies(task_id, '_errors')[0])[
            'state'] == 'rejected'
    assert inproc.bridge._thread.is_alive()


def test_redis_batch_the_conductor_refuses_ends_the_wait(inproc):
    inproc.push(good_entry('refused'))
    wait_until(lambda: inproc.invalid(), what='the refused entry set aside')
    assert inproc.invalid()[0]['reason'].startswith('invalid batch')
    wait_until(lambda: inproc.replies('refused')[-1:] == ['end'],
               what='"end" for the refused task')
    assert inproc.replies('refused') == ['start', 'end']


def test_redis_odd_batch_events_do_not_block_the_next(inproc):
    tid = inproc.ns + '-ev'
    inproc.push(good_entry(tid, 'a'))
    wait_until(lambda: tid in inproc.conductor.batches, what='the batch')
    # No item of the task, a name Redis cannot take: nothing to push.
    inproc.notify('batch.item', {'batch_id': tid, 'idx': 7, 'state': 'done',
                                 'name': {'not': 'a string'}})
    inproc.notify('batch.item', {'batch_id': tid, 'idx': 0,
                                 'state': ['?'], 'attempts': {}})
    inproc.notify_raw(b'{"event_type": "batch.item", "payload": '
                      b'{"batch_id": "\\ud800", "idx": 0}}')
    inproc.notify('batch.end', {
        'batch_id': tid, 'state': 'done', 'totals': ['not', 'a', 'dict'],
        'items': [1, 'x', None, {'idx': True}, {'idx': 0, 'state': 'done'}]})
    wait_until(lambda: inproc.replies(tid)[-1:] == ['end'], timeout=30,
               what='"end" after the odd events')
    assert inproc.replies(tid) == ['start', 'a', 'end']
    assert [json.loads(r)['state'] for r in
            inproc.replies(tid, '_errors')] == [None]


def test_redis_task_id_reused_with_other_items_leaves_the_running_task(
        inproc):
    """A second entry under a running task's id is refused by the
    conductor; the first producer's replies are left to its batch."""
    tid = inproc.ns + '-dup'
    inproc.push(json.dumps({'task_id': tid, 'task_info': [
        {'fn': 's%d' % i, 'url': 'http://h/s%d.jpg' % i}
        for i in range(4)]}))
    wait_until(lambda: tid in inproc.conductor.batches, what='the batch')
    inproc.notify('batch.start', {'batch_id': tid, 'total': 4})
    wait_until(lambda: inproc.replies(tid) == ['start'], what='"start"')
    second = good_entry(tid, 'other')
    inproc.push(second)
    # The rejection pushes its replies before it moves the entry.
    (record,) = wait_until(inproc.invalid, what='the second entry set aside')
    assert record['entry'] == second
    assert 'already exists with other items' in record['reason']
    assert inproc.rdb.llen(inproc.tasks + ':processing') == 0
    assert inproc.replies(tid) == ['start']
    assert inproc.replies(tid, '_errors') == []
    # The first task's own outcomes still reach its producer.
    for idx in range(4):
        inproc.notify('batch.item', {'batch_id': tid, 'idx': idx,
                                     'state': 'done', 'attempts': 1})
    inproc.notify('batch.end', {'batch_id': tid, 'state': 'done',
                                'totals': {'done': 4}, 'items': []})
    wait_until(lambda: inproc.replies(tid)[-1:] == ['end'],
               what='"end" of the first task')
    assert inproc.replies(tid) == ['start', 's0', 's1', 's2', 's3', 'end']
    assert inproc.bridge._thread.is_alive()


def test_redis_entry_that_is_not_utf8_is_kept_whole(inproc):
    tid = inproc.ns + '-gz'
    raw = gzip.compress(good_entry(tid).encode())
    with pytest.raises(UnicodeDecodeError):
        raw.decode('utf-8')
    inproc.push(raw)
    inproc.push(b'not json')  # UTF-8: "entry" alone keeps it
    records = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(
        inproc.invalid()), what='both entries set aside')
    binary, text = records
    assert binary['reason'] == 'the entry is not UTF-8 text'
    assert base64.b64decode(binary['entry_base64'], validate=True) == raw
    assert binary['entry'] == raw.decode('utf-8', 'replace')
    assert text['entry'] == 'not json' and 'entry_base64' not in text
    assert inproc.rdb.llen(inproc.tasks + ':processing') == 0
    assert inproc.bridge._thread.is_alive()
