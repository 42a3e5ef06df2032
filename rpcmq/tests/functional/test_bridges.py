"""The Redis and MQTT bridges end to end: rpcmq-server, rpcmq-conductor
and a bridge as daemons on RabbitMQ, fed by raw redis-py / paho clients
that behave like the PHP producer of the batch downloader and the image
sync publisher."""

import json
import os
import queue
import time
import uuid

import kombu
import pytest

from rpcmq.testing.imageserver import ImageServer
from rpcmq.tests.functional.conftest import RABBIT_URL, REDIS_URL, require
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.functional.fixtures import wait_until

redis = pytest.importorskip('redis')
mqtt = pytest.importorskip('paho.mqtt.client')

PROGRAMS = {'server': 'rpcmq-server', 'conductor': 'rpcmq-conductor',
            'redis': 'rpcmq-bridge-redis', 'mqtt': 'rpcmq-bridge-mqtt'}
STARTED = {'server': 'serving', 'conductor': 'rpcmq-conductor started',
           'redis': 'rpcmq-bridge-redis started',
           'mqtt': 'mqtt subscribed to'}


@pytest.fixture(scope='module')
def images():
    with ImageServer() as srv:
        yield srv


class Stack:
    """One config (unique exchanges, lists, topics) and its daemons."""

    def __init__(self, tmp_path, security=None):
        self.tmp = tmp_path
        self.ns = 'brt%s' % uuid.uuid4().hex[:10]
        self.store = tmp_path / 'store'
        self.tasks = '%s:tasks' % self.ns
        self.resp = '%s_resp' % self.ns
        self.topic = '%s/sync' % self.ns
        self.client_id = '%s-bridge' % self.ns
        self.pools = ['%s-redis' % self.ns, '%s-mqtt' % self.ns]
        self.daemons = {}
        self.started = set()
        self.sections = {
            'DEFAULT': {
                'transport_url': RABBIT_URL, 'control_exchange': self.ns,
                'notification_exchange': self.ns + '_notify',
                'endpoints': 'image', 'topic': self.ns + '_image',
                'host': self.ns, 'graceful_shutdown_timeout': 3,
                'store': 'file', 'log_level': 'INFO'},
            'image': {'allow_private_networks': True,
                      'spool_dir': tmp_path / 'spool',
                      'download_retries': 0},
            'file_store': {'root': self.store},
            'conductor': {
                'connection': 'sqlite:///%s' % (tmp_path / 'c.sqlite'),
                'image_topic': self.ns + '_image', 'item_retries': 1,
                'retry_backoff': 0.1, 'poll_interval': 0.05,
                'topic': self.ns + '_conductor'},
            'redis_bridge': {
                'url': REDIS_URL, 'tasks_list': self.tasks,
                'reply_prefix': self.resp, 'pool': self.pools[0],
                'submit_timeout': 3, 'retry_interval': 0.2,
                'retry_interval_max': 1},
            'mqtt_bridge': {
                'topics': self.topic, 'client_id': self.client_id,
                'state_file': tmp_path / 'mqtt-state.sqlite',
                'pool': self.pools[1], 'submit_timeout': 3,
                'retry_interval': 0.2, 'retry_interval_max': 1},
        }
        if security:
            self.sections['security'] = security
        self.config = write_config(tmp_path / 'rpcmq.conf', self.sections)
        # The same, but the broker is unreachable: a bridge started with it
        # takes tasks/messages and cannot submit them.
        self.sections['DEFAULT'] = dict(
            self.sections['DEFAULT'],
            transport_url='rabbit://guest:guest@127.0.0.1:1/')
        self.cut_off = write_config(tmp_path / 'cut-off.conf', self.sections)

    def tid(self, name):
        return '%s-%s' % (self.ns, name)

    def start(self, name, config=None):
        old = self.daemons.get(name)
        if old is not None:
            old.stop()
        log = self.tmp / ('%s.log' % name)
        offset = os.path.getsize(log) if log.exists() else 0
        daemon = Daemon(PROGRAMS[name], config or self.config, log).start()
        self.started.add(name)
        self.daemons[name] = daemon
        deadline = time.monotonic() + 30
        while STARTED[name] not in daemon.log()[offset:]:
            assert daemon.proc.poll() is None and \
                time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        return daemon

    def kill(self, name):
        self.daemons.pop(name).kill()

    def path(self, key):
        return self.store / key

    def close(self):
        for daemon in self.daemons.values():
            daemon.stop()
        if 'mqtt' in self.started:
            # Drop the bridge's persistent session on the broker.
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                 client_id=self.client_id,
                                 clean_session=True)
            client.connect('127.0.0.1', 1883)
            client.disconnect()
        with kombu.Connection(RABBIT_URL.replace('rabbit://', 'amqp://'),
                              connect_timeout=5) as conn:
            image = self.ns + '_image'
            for name in self.pools + [image, '%s.%s' % (image, self.ns),
                                      self.ns + '_conductor',
                                      '%s_conductor.%s' % (self.ns, self.ns)]:
                try:
                    conn.default_channel.queue_delete(name)
                except Exception:
                    pass


@pytest.fixture
def stack(tmp_path):
    require('rabbit')
    stack = Stack(tmp_path)
    yield stack
    stack.close()


# -- Redis ----------------------------------------------------------------

@pytest.fixture
def rdb(stack):
    require('redis')
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    keys = list(client.scan_iter(stack.ns + '*'))
    if keys:
        client.delete(*keys)
    client.close()


def push_task(rdb, stack, task_id, infos):
    """What the PHP side does: LPUSH the task JSON."""
    rdb.lpush(stack.tasks, json.dumps({'task_id': task_id,
                                       'task_info': infos}))


def wait_replies(rdb, stack, task_id, timeout=60):
    """What the PHP side does: BRPOP the reply list until "end"."""
    key = '%s_%s' % (stack.resp, task_id)
    got, deadline = [], time.monotonic() + timeout
    while not got or got[-1] != 'end':
        left = deadline - time.monotonic()
        assert left > 0, 'replies so far: %r' % got
        reply = rdb.brpop(key, timeout=min(3, max(1, int(left))))
        if reply is not None:
            got.append(reply[1].decode())
    return got


def assert_no_more(rdb, stack, task_id, wait=1.5):
    time.sleep(wait)
    assert rdb.llen('%s_%s' % (stack.resp, task_id)) == 0


def errors_of(rdb, stack, task_id):
    key = '%s_%s_errors' % (stack.resp, task_id)
    return [json.loads(raw) for raw in rdb.lrange(key, 0, -1)]


def test_redis_task_replies_like_the_asyncio_downloader(stack, rdb, images):
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    tid = stack.tid('ok')
    push_task(rdb, stack, tid, [
        {'fn': 'cover', 'url': images.url('/img/r1.jpg?kb=20')},
        {'fn': 'back.png', 'url': images.url('/img/r2.png')},
        {'fn': 'noext', 'url': images.url('/redirect/img/r3.webp')},
        {'fn': 'gone', 'url': images.url('/status/404')},
        {'fn': 'page', 'url': images.url('/html')}])
    got = wait_replies(rdb, stack, tid)
    assert got[0] == 'start' and got[-1] == 'end'
    assert sorted(got[1:-1]) == ['back.png', 'cover', 'noext']
    assert stack.path(tid + '/cover.jpg').stat().st_size > 10000
    assert stack.path(tid + '/back.png').exists()
    assert stack.path(tid + '/noext.webp').exists()
    failed = {e['fn']: e for e in errors_of(rdb, stack, tid)}
    assert sorted(failed) == ['gone', 'page']
    assert failed['gone']['state'] == 'failed'
    assert failed['gone']['error']['type'] == 'DownloadFailed'
    assert failed['page']['error']['type'] == 'NotAnImage'
    assert rdb.llen(stack.tasks + ':processing') == 0
    assert_no_more(rdb, stack, tid)


def test_redis_bad_entries_are_set_aside(stack, rdb, images):
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    bad_info, bad_url, good = (stack.tid(n) for n in ('info', 'url', 'good'))
    rdb.lpush(stack.tasks, b'not json')
    rdb.lpush(stack.tasks, json.dumps({'task_info': []}))
    push_task(rdb, stack, bad_info, 'http://x/a.jpg')
    push_task(rdb, stack, bad_url, [{'fn': 'a', 'url': 'a.jpg'}])
    push_task(rdb, stack, good, [{'fn': 'a', 'url': images.url(
        '/img/g.gif')}])
    # An unchanged PHP client still ends: start, end, reason in _errors.
    assert wait_replies(rdb, stack, bad_url) == ['start', 'end']
    assert errors_of(rdb, stack, bad_url)[0]['error']['message'] == \
        "task_info[0].url 'a.jpg' is not an http(s) URL with a host"
    assert wait_replies(rdb, stack, bad_info) == ['start', 'end']
    assert wait_replies(rdb, stack, good) == ['start', 'a', 'end']
    assert stack.path(good + '/a.gif').exists()
    invalid = [json.loads(r) for r in rdb.lrange(stack.tasks + '_invalid',
                                                  0, -1)][::-1]
    assert [r['entry'] for r in invalid][0] == 'not json'
    assert [r['reason'].split(':')[0] for r in invalid] == [
        'the entry is not JSON', 'the entry has no task_id',
        'task_info must be a non-empty list of {"fn", "url"}',
        'task_info[0].url \'a.jpg\' is not an http(s) URL with a host']
    assert rdb.llen(stack.tasks + ':processing') == 0
    assert stack.daemons['redis'].proc.poll() is None


def test_redis_duplicate_task_runs_and_replies_once(stack, rdb, images):
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    tid = stack.tid('dup')
    infos = [{'fn': 'd%d' % n, 'url': images.url('/img/%s%d.png' % (tid, n))}
             for n in range(3)]
    push_task(rdb, stack, tid, infos)
    push_task(rdb, stack, tid, infos)
    got = wait_replies(rdb, stack, tid)
    assert got[0] == 'start' and sorted(got[1:-1]) == ['d0', 'd1', 'd2']
    push_task(rdb, stack, tid, infos)  # again, after it ended
    assert_no_more(rdb, stack, tid, wait=3)
    assert [images.count('/img/%s%d.png' % (tid, n))
            for n in range(3)] == [1] * 3
    assert rdb.llen(stack.tasks) == rdb.llen(stack.tasks + ':processing') \
        == 0


def test_redis_task_larger_than_a_message_goes_in_chunks(stack, rdb,
                                                         images):
    # A valid task bigger than max_message_size (here 8 KiB) was retried
    # for ever, and every task behind it waited.
    stack.sections['DEFAULT'] = dict(stack.sections['DEFAULT'],
                                     transport_url=RABBIT_URL,
                                     max_message_size=8192)
    stack.config = write_config(stack.tmp / 'small.conf', stack.sections)
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    big, after = stack.tid('big'), stack.tid('after')
    infos = [{'fn': 'f%03d' % n, 'url': images.url(
        '/img/%s-%03d.gif?%s' % (big, n, 'p' * 40))} for n in range(100)]
    assert len(json.dumps(infos)) > 8192
    push_task(rdb, stack, big, infos)
    push_task(rdb, stack, after, [{'fn': 'a', 'url': images.url(
        '/img/%s.gif' % after)}])
    got = wait_replies(rdb, stack, big, timeout=90)
    assert got[0] == 'start' and got[-1] == 'end'
    assert sorted(got[1:-1]) == ['f%03d' % n for n in range(100)]
    assert wait_replies(rdb, stack, after) == ['start', 'a', 'end']
    assert stack.path(big + '/f099.gif').exists()


def test_redis_bridge_killed_after_taking_a_task(stack, rdb, images):
    stack.start('server')
    stack.start('conductor')
    # A bridge cut off from RabbitMQ takes the task and cannot submit it.
    stack.start('redis', config=stack.cut_off)
    tid = stack.tid('kill')
    push_task(rdb, stack, tid, [{'fn': 'k', 'url': images.url(
        '/img/%s.jpg' % tid)}])
    wait_until(lambda: rdb.llen(stack.tasks + ':processing') == 1,
               what='the task in processing')
    assert rdb.llen(stack.tasks) == 0
    stack.kill('redis')  # kill -9
    stack.start('redis')
    assert wait_replies(rdb, stack, tid) == ['start', 'k', 'end']
    assert stack.path(tid + '/k.jpg').exists()
    assert rdb.llen(stack.tasks + ':processing') == 0
    assert_no_more(rdb, stack, tid)
    assert images.count('/img/%s.jpg' % tid) == 1


def test_redis_events_wait_while_the_bridge_is_down(stack, rdb, images):
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    tid = stack.tid('down')
    infos = [{'fn': 's%d' % n, 'url': images.url(
        '/slow/%s%d.png?delay=0.2&chunks=5' % (tid, n))} for n in range(4)]
    push_task(rdb, stack, tid, infos)
    key = '%s_%s' % (stack.resp, tid)
    wait_until(lambda: rdb.llen(key) > 0, what='"start"')
    stack.kill('redis')
    wait_until(lambda: all(stack.path('%s/s%d.png' % (tid, n)).exists()
                           for n in range(4)), timeout=60, what='the files')
    time.sleep(1)  # batch.end goes to the pool queue, nobody reads it
    got = [r.decode() for r in rdb.lrange(key, 0, -1)][::-1]
    rdb.delete(key)
    assert got[0] == 'start' and 'end' not in got
    stack.start('redis')
    got += wait_replies(rdb, stack, tid)
    assert got[0] == 'start' and got[-1] == 'end'
    assert sorted(got[1:-1]) == ['s0', 's1', 's2', 's3']
    assert_no_more(rdb, stack, tid)


# -- MQTT -----------------------------------------------------------------

class Watcher:
    """A raw paho client: publishes like the sync client, collects the
    bridge's progress and error messages."""

    def __init__(self, stack, under=None):
        # under: the topic (filter) whose progress and errors it collects.
        require('mqtt')
        self.stack = stack
        under = under or stack.topic
        self.messages = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=stack.ns + '-watch')
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, json.loads(m.payload)))
        self.client.connect('127.0.0.1', 1883)
        self.client.loop_start()
        info = self.client.subscribe([(under + '/progress', 1),
                                      (under + '/errors', 1)])
        assert info[0] == 0
        time.sleep(0.3)

    def publish(self, payload, topic=None):
        self.client.publish(topic or self.stack.topic, payload, qos=1) \
            .wait_for_publish(10)

    def until_end(self, count=1, timeout=60):
        ends, events = [], []
        deadline = time.monotonic() + timeout
        while len(ends) < count:
            topic, body = self.messages.get(
                timeout=max(0.1, deadline - time.monotonic()))
            events.append((topic, body))
            if body.get('event') == 'batch.end':
                ends.append(body)
        return ends, events

    def errors(self, count, timeout=30):
        out = []
        while len(out) < count:
            topic, body = self.messages.get(timeout=timeout)
            if topic.endswith('/errors'):
                out.append(body)
        return out

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def watcher(stack):
    watcher = Watcher(stack)
    yield watcher
    watcher.close()


def test_mqtt_sync_message_becomes_a_batch(stack, watcher, images):
    for name in ('server', 'conductor', 'mqtt'):
        stack.start(name)
    work = '/img/%s-w1-' % stack.ns
    urls = [images.url(work + 'a.jpg?kb=5'), images.url(work + 'b.png'),
            images.url('/status/404')]
    watcher.publish(','.join(urls))
    (end,), events = watcher.until_end()
    kinds = [body['event'] for _, body in events]
    assert kinds[0] == 'batch.start' and kinds.count('batch.item') == 3
    assert end['batch_id'].startswith('mqtt-')
    assert end['totals']['done'] == 2 and end['totals']['failed'] == 1
    # The bridge's protocol, as before the conductor's done_with_failures.
    assert end['state'] == 'done'
    assert all(topic == stack.topic + '/progress' for topic, _ in events)
    # Stored under the URL path, as the sync client laid files out.
    assert stack.path(work[1:] + 'a.jpg').exists()
    assert stack.path(work[1:] + 'b.png').exists()


def test_mqtt_bad_payloads_are_reported(stack, watcher, images):
    for name in ('server', 'conductor', 'mqtt'):
        stack.start(name)
    for payload in ('', 'hello', '{"items": [', '[{"url": "x"}]'):
        watcher.publish(payload)
    errors = watcher.errors(4)
    assert [e['reason'].split(':')[0].split(' ')[0] for e in errors] == [
        'empty', 'URL', 'bad', 'item']
    assert errors[1]['payload'] == 'hello'
    watcher.publish(json.dumps({'batch_id': stack.tid('json'), 'items': [
        {'url': images.url('/img/j.png'), 'key': 'j/1.png'}]}))
    (end,), _ = watcher.until_end()
    assert end['batch_id'] == stack.tid('json') and end['state'] == 'done'
    assert stack.path('j/1.png').exists()


def test_mqtt_hostile_payloads_do_not_stop_the_bridge(stack, watcher,
                                                       images):
    for name in ('server', 'conductor', 'mqtt'):
        stack.start(name)
    nested = '[' * 100000 + ']' * 100000
    for payload in (nested, '{"items": %s}' % nested,
                    '[{"url": "http://h/a.jpg", "key": ["x"]}]',
                    '["http://h/\\ud800.jpg"]'):
        watcher.publish(payload)
    errors = watcher.errors(4)
    assert [e['reason'] for e in errors] == [
        'bad JSON: nested too deeply', 'bad JSON: nested too deeply',
        "item 0 key must be a UTF-8 string, not ['x']",
        "item 0 'http://h/\\ud800.jpg' holds a lone UTF-16 surrogate"]
    watcher.publish(json.dumps({'batch_id': stack.tid('after'), 'items': [
        {'url': images.url('/img/after.png'), 'key': 'after/1.png'}]}))
    (end,), _ = watcher.until_end()
    assert end['batch_id'] == stack.tid('after') and end['state'] == 'done'
    assert stack.daemons['mqtt'].proc.poll() is None


def test_mqtt_messages_wait_while_the_bridge_is_down(stack, watcher, images):
    stack.start('server')
    stack.start('conductor')
    stack.start('mqtt')  # creates the persistent session
    assert stack.daemons['mqtt'].terminate() == 0
    stack.daemons.pop('mqtt')
    off = '/img/%s-off-' % stack.ns
    first = images.url(off + '1.jpg')
    watcher.publish(first)
    watcher.publish(first)  # the same message again: one batch
    watcher.publish(images.url(off + '2.jpg'))
    stack.start('mqtt')
    ends, _ = watcher.until_end(2)
    assert len({e['batch_id'] for e in ends}) == 2
    time.sleep(1.5)
    later = [watcher.messages.get() for _ in range(watcher.messages.qsize())]
    assert [body for _, body in later if body['event'] == 'batch.end'] == []
    assert images.count(off + '1.jpg') == 1
    assert stack.path(off[1:] + '2.jpg').exists()


def test_mqtt_unacked_message_survives_a_kill(stack, watcher, images):
    stack.start('server')
    stack.start('conductor')
    # Cut off from RabbitMQ: receives the message, cannot submit or ack it.
    bridge = stack.start('mqtt', config=stack.cut_off)
    watcher.publish(images.url('/img/%s-m.jpg' % stack.ns))
    bridge.wait_for_log('message on %s' % stack.topic)
    stack.kill('mqtt')  # kill -9
    stack.start('mqtt')
    (end,), _ = watcher.until_end()
    assert end['state'] == 'done' and end['totals']['done'] == 1
    assert stack.path('img/%s-m.jpg' % stack.ns).exists()
    assert images.count('/img/%s-m.jpg' % stack.ns) == 1


def test_mqtt_unpublishable_progress_does_not_stop_other_batches(stack,
                                                                 images):
    # A wildcard subscription takes a message on a topic so long that
    # '<topic>/progress' is more than the 65535 bytes MQTT allows: its
    # events are dropped (logged), not retried for ever in front of the
    # events of every later batch.
    stack.sections['mqtt_bridge']['topics'] = stack.topic + '/#'
    stack.sections['DEFAULT'] = dict(stack.sections['DEFAULT'],
                                     transport_url=RABBIT_URL)
    stack.config = write_config(stack.tmp / 'rpcmq.conf', stack.sections)
    watcher = Watcher(stack, under=stack.topic + '/+')
    try:
        for name in ('server', 'conductor', 'mqtt'):
            stack.start(name)
        long_topic = stack.topic + '/' + 'L' * (65535 - len(stack.topic) - 5)
        assert len((long_topic + '/progress').encode('utf-8')) > 65535
        long_key = 'img/%s-long.png' % stack.ns
        watcher.publish(images.url('/' + long_key), topic=long_topic)
        # Its error report cannot be published either: logged, acked.
        watcher.publish('hello', topic=long_topic)
        wait_until(lambda: stack.path(long_key).exists(), timeout=30,
                   what='the long-topic batch to be downloaded')
        ok_key = 'img/%s-ok.png' % stack.ns
        watcher.publish(images.url('/' + ok_key), topic=stack.topic + '/ok')
        try:
            (end,), events = watcher.until_end(timeout=30)
        except queue.Empty:
            pytest.fail('no batch.end after a batch whose progress topic '
                        'is too long')
        assert end['state'] == 'done' and end['totals']['done'] == 1
        assert {topic for topic, _ in events} == {
            stack.topic + '/ok/progress'}
        assert stack.path(ok_key).exists()
        bridge = stack.daemons['mqtt']
        bridge.wait_for_log('dropping batch.end of batch')
        log = bridge.log()
        assert 'more than the 65535 bytes an MQTT topic' in log
        assert 'error report for' in log and 'given up' in log
        assert 'not handled' not in log
        assert bridge.proc.poll() is None
    finally:
        watcher.close()


# -- One hostile entry or event never stops the Redis bridge -------------
