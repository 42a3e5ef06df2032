"""The batch pipeline as real processes on RabbitMQ.

Two ``rpcmq-server`` daemons (img-a, img-b; endpoint ``image``, eventlet,
``store = oss`` with V4 signatures) and one ``rpcmq-conductor`` daemon run
from config files; this process runs the image HTTP server and the
OSS-compatible server, submits through ``ConductorAPI`` and listens to the
``batch.*`` notifications. Daemons are killed with SIGKILL mid-batch; every
batch must still end once, with every object stored once under its key
(``sha1(url).jpg``, the endpoint's default).

The image servers and the notification listener are shared by the module;
each test gets a fresh conductor database (SQLite, or a PostgreSQL schema
that is created and dropped).
"""

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import kombu
import pytest

import rpcmq
from rpcmq.conductor.models import make_engine
from rpcmq.notify import Notifier, get_notification_listener
from rpcmq.testing import imageserver
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.pipeline import Pipeline
from rpcmq.tests.functional.conftest import RABBIT_URL, require
from rpcmq.tests.functional.fixtures import (
    OSS,
    Cluster,
    Events,
    key_for,
    pipeline_oss,
    unique,
)

BATCH = 200
ITEM_RETRIES = 3
CONDUCTOR_OPTS = {'conductor': {
    'max_inflight': 16, 'max_inflight_per_batch': 16,
    'item_retries': ITEM_RETRIES, 'retry_backoff': 0.2,
    'retry_backoff_max': 1.0, 'fetch_timeout': 5, 'store_timeout': 5,
    'poll_interval': 0.1}}
# Slow enough that a batch of 200 runs for a few seconds at 16 in flight.
SLOW = '/slow/%s-%d.jpg?delay=0.08&chunks=4'


class TracingImageServer(ImageServer):
    """The image server, also counting the downloads in progress per
    User-Agent (each image server sends ``rpcmq-fetch/<host>``)."""

    def __init__(self):
        super().__init__()
        self.downloading = collections.Counter()

    def start(self):
        owner = self

        class Handler(imageserver._Handler):
            def do_GET(self):
                agent = self.headers.get('User-Agent', '')
                with owner._lock:
                    owner.downloading[agent] += 1
                try:
                    super().do_GET()
                finally:
                    with owner._lock:
                        owner.downloading[agent] -= 1

        self.stopping.clear()
        self._httpd = imageserver._Server(self._address, Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        args=(0.1,), daemon=True)
        self._thread.start()
        return self

    def downloads(self, host):
        with self._lock:
            return self.downloading['rpcmq-fetch/%s' % host]


@pytest.fixture(scope='module')
def images():
    with TracingImageServer() as srv:
        yield srv


@pytest.fixture(scope='module')
def oss():
    with pipeline_oss() as srv:
        yield srv


@pytest.fixture(scope='module')
def cluster(tmp_path_factory, oss):
    require('rabbit')
    cluster = Cluster(tmp_path_factory.mktemp('pipeline'), RABBIT_URL,
                      oss.endpoint, conductor_opts=CONDUCTOR_OPTS)
    try:
        cluster.start_servers()
        cluster.listen()
        yield cluster
    finally:
        codes = cluster.close()
    assert set(codes.values()) <= {0, None}, (codes, cluster.logs())


@pytest.fixture
def sqlite_url(cluster):
    return 'sqlite:///%s' % (cluster.workdir / (
        'conductor-%s.sqlite' % uuid.uuid4().hex[:8]))


@pytest.fixture
def pipeline(cluster, sqlite_url):
    """The cluster with every server up and a conductor on a new SQLite."""
    cluster.ensure_servers()
    cluster.start_conductor(sqlite_url)
    yield cluster
    assert cluster.stop_conductor() == 0, cluster.logs()


# -- checks -------------------------------------------------------------------

def bucket_keys(oss):
    """Keys of every object in the bucket (the server has no ListObjects)."""
    backend = oss.backend
    with backend._lock:
        return set(backend._buckets[OSS['bucket']])


def put_counts(oss, keys):
    counts = collections.Counter(
        r['key'] for r in oss.requests('PutObject') if r['status'] == 200)
    return {k: counts[k] for k in keys}


def wait_done(cluster, batch_id, count, timeout=20):
    """Wait until ``count`` items are done and some run (the conductor's
    database says so: its events may lag); return the totals."""
    deadline = time.monotonic() + timeout
    while True:
        totals = cluster.api.status(batch_id)['totals']
        if totals['done'] >= count and totals['running']:
            assert totals['pending'] > 0, totals  # still mid-batch
            return totals
        assert time.monotonic() < deadline, totals
        time.sleep(0.05)


def submit(cluster, oss, urls):
    before = bucket_keys(oss)
    batch_id = cluster.submit([{'url': u} for u in urls])
    return batch_id, before


def check_batch(cluster, oss, batch_id, urls, before, timeout=40):
    """The batch ended once, all done, each object stored once; return the
    batch.end payload."""
    end = cluster.wait_end(batch_id, timeout=timeout)
    time.sleep(0.5)  # a duplicate batch.end would be here by now
    ends = cluster.events.of('batch.end', batch_id)
    assert len(ends) == 1, [e['event_id'] for e in ends]
    assert len(cluster.events.of('batch.start', batch_id)) == 1
    n = len(urls)
    assert end['state'] == 'done'
    assert end['totals'] == {'total': n, 'pending': 0, 'running': 0,
                             'done': n, 'failed': 0, 'cancelled': 0}
    assert sorted(i['idx'] for i in end['items']) == list(range(n))
    # One batch.item per item (a resent one keeps its event_id).
    items = cluster.events.of('batch.item', batch_id)
    assert len({e['event_id'] for e in items}) == n
    assert {e['idx'] for e in items} == set(range(n))
    # Every object exists once, under the key the endpoint derives from
    # the URL, with the bytes that were fetched; nothing else was stored.
    expected = {key_for(u) for u in urls}
    assert len(expected) == n
    assert bucket_keys(oss) - before == expected
    by_url = {i['url']: i for i in end['items']}
    for url in urls:
        result = by_url[url]['result']
        assert result['key'] == key_for(url)
        body = oss.get_object(OSS['bucket'], result['key'])
        assert len(body) == result['size']
        assert hashlib.sha256(body).hexdigest() == result['sha256']
    return end


# -- tests --------------------------------------------------------------------

@pytest.mark.parametrize('db', ['sqlite', 'postgresql'])
def test_a_batch_is_stored_once_and_ends_once(request, cluster, images, oss,
                                              db):
    cluster.ensure_servers()
    if db == 'sqlite':
        url = request.getfixturevalue('sqlite_url')
    else:
        url, schema = request.getfixturevalue('postgres_schema_url')
    cluster.start_conductor(url)
    try:
        urls = [images.url('/img/basic-%s-%d.jpg?kb=4' % (db, i))
                for i in range(BATCH)]
        batch_id, before = submit(cluster, oss, urls)
        end = check_batch(cluster, oss, batch_id, urls, before)
        # Nothing failed, so nothing ran or was uploaded twice.
        assert {i['attempts'] for i in end['items']} == {1}
        assert set(put_counts(oss, {key_for(u) for u in urls}).values()) \
            == {1}
        assert {i['result']['server'] for i in end['items']} == \
            {'img-a', 'img-b'}
        assert cluster.api.status(batch_id)['state'] == 'done'
        # Its own [conductor] topic: no other conductor's batch got here.
        assert [b['batch_id'] for b in cluster.api.list()] == [batch_id]
    finally:
        assert cluster.stop_conductor() == 0, cluster.logs()
    if db == 'postgresql':
        engine, _ = make_engine(url)
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = '%s'" % schema).scalars().all()
            assert conn.exec_driver_sql(
                'SELECT count(*) FROM items WHERE batch_id = %(b)s',
                {'b': batch_id}).scalar() == BATCH
        engine.dispose()
        assert {'batches', 'items'} <= set(tables)


def test_a_server_killed_mid_batch(pipeline, images, oss):
    cluster = pipeline
    urls = [images.url(SLOW % ('skill', i)) for i in range(BATCH)]
    batch_id, before = submit(cluster, oss, urls)
    wait_done(cluster, batch_id, 30)
    deadline = time.monotonic() + 10
    while images.downloads('img-a') < 1:  # kill it mid-download
        assert time.monotonic() < deadline, 'img-a downloads nothing'
        time.sleep(0.005)
    cluster.kill_server('img-a')
    end = check_batch(cluster, oss, batch_id, urls, before)
    assert len(cluster.events.of('batch.item', batch_id)) == BATCH
    assert {i['result']['server'] for i in end['items']} == \
        {'img-a', 'img-b'}
    # Calls are acked on receipt, so what img-a held died with it: the
    # download in progress, fetches not yet started, stores pinned to it.
    # Their calls timed out and the items ran again, on img-b.
    retried = [i for i in end['items'] if i['attempts'] > 1]
    assert retried
    assert {i['result']['server'] for i in retried} == {'img-b'}


def test_the_conductor_killed_mid_batch_and_restarted(pipeline, images, oss):
    cluster = pipeline
    urls = [images.url(SLOW % ('ckill', i)) for i in range(BATCH)]
    batch_id, before = submit(cluster, oss, urls)
    wait_done(cluster, batch_id, 40)
    cluster.kill_conductor()
    assert cluster.conductor.proc.returncode == -9
    cluster.start_conductor()  # the same config file, the same SQLite
    # Its earlier incarnation stops beating; within heartbeat_timeout the
    # new one takes its running items back.
    cluster.conductor.wait_for_log('took back', timeout=30)
    end = check_batch(cluster, oss, batch_id, urls, before)
    # The items running when it died ran again, under the same key.
    assert any(i['attempts'] > 1 for i in end['items'])


def test_a_batch_end_the_broker_refused_goes_out_after_a_crash(
        pipeline, images, oss):
    """A subscriber bounds its queue and has it refuse what does not fit
    (``x-overflow: reject-publish``): while it is full the broker nacks
    ``batch.end``. The conductor used to record an event as sent once it
    was written, not once the broker took it: killed while the broker
    still refused it, it never sent it again and that subscriber never
    learnt the batch had ended. An event is now recorded as sent once the
    broker confirmed it."""
    cluster = pipeline
    exchange = kombu.Exchange(cluster.notification_exchange, type='topic',
                              durable=True)
    full = kombu.Queue(unique('full-subscriber'), exchange,
                       routing_key='batch.end', auto_delete=False,
                       queue_arguments={'x-max-length': 1,
                                        'x-overflow': 'reject-publish'})
    with kombu.Connection(RABBIT_URL.replace('rabbit://', 'amqp://')) as conn:
        queue = full(conn.default_channel)
        queue.declare()
        try:
            conn.Producer().publish('filler', routing_key=queue.name)
            urls = [images.url('/img/refused-%d.jpg?kb=4' % i)
                    for i in range(3)]
            batch_id, before = submit(cluster, oss, urls)
            # Our own listener gets each copy; the full queue refuses them.
            deadline = time.monotonic() + 30
            while len(cluster.events.of('batch.end', batch_id)) < 2:
                assert time.monotonic() < deadline, cluster.logs()
                time.sleep(0.05)
            cluster.kill_conductor()
            assert queue.get(no_ack=True).payload == 'filler'  # room for one
            cluster.start_conductor()
            deadline = time.monotonic() + 30
            while True:
                message = queue.get(no_ack=True)
                if message is not None:
                    break
                assert time.monotonic() < deadline, \
                    'the subscriber never got batch.end'
                time.sleep(0.05)
            end = json.loads(message.body)
            assert end['event_type'] == 'batch.end'
            assert end['payload']['batch_id'] == batch_id
            assert end['payload']['totals']['done'] == 3
        finally:
            queue.delete()


def test_events_are_not_held_back_by_another_refused_cast(tmp_path):
    """Embedded (``rpcmq.testing.Pipeline`` on RabbitMQ), the conductor
    shares its transport with other publishers: here a notifier whose
    events a full ``reject-publish`` queue keeps refusing. Batch events
    are recorded as sent once the broker confirmed *them*; waiting for
    every cast of the transport to be confirmed (its ``flush``) held them
    back for as long as the other one was refused, and no batch ended."""
    require('rabbit')
    notifications = unique('rpcmq_func_notify')
    names = {'control_exchange': unique('rpcmq_func'),
             'notification_exchange': notifications,
             'conductor.topic': unique('conductor')}
    image_topic = unique('image')
    full = kombu.Queue(unique('full-subscriber'), kombu.Exchange(
        notifications, type='topic', durable=True),
        routing_key='other.refused', auto_delete=False,
        queue_arguments={'x-max-length': 1, 'x-overflow': 'reject-publish'})
    p = Pipeline(str(tmp_path), url=RABBIT_URL, image_topic=image_topic,
                 **names)
    with kombu.Connection(RABBIT_URL.replace('rabbit://', 'amqp://')) as conn:
        queue = full(conn.default_channel)
        queue.declare()
        conn.Producer().publish('filler', routing_key=queue.name)
        try:
            with p:
                events = Events()
                listener = get_notification_listener(
                    p.transport, [rpcmq.Target(topic='batch.*')], [events])
                listener.start()
                try:
                    assert listener.ready.wait(15)
                    other = Notifier(p.transport, 'other')
                    other.info({}, 'other.refused', {'n': 1})
                    assert not other.flush(0.5)  # the broker refuses it
                    batch_id = p.api.submit([
                        {'url': p.images.url('/img/held-%d.jpg' % i)}
                        for i in range(3)])
                    end = events.wait_end(batch_id, timeout=30)
                    assert end['totals']['done'] == 3
                    assert not other.flush(0)  # still refused meanwhile
                finally:
                    listener.stop()
                    listener.wait(10)
        finally:
            queue.delete()
            delete_entities(RABBIT_URL, [
                image_topic, names['conductor.topic'],
                '%s.conductor' % names['conductor.topic']] + [
                '%s.%s' % (image_topic, h) for h in p.hosts], [
                names['control_exchange'], notifications,
                '%s_fanout' % image_topic,
                '%s_fanout' % names['conductor.topic']])


def test_three_conductors_on_one_database_one_killed_mid_batch(
        cluster, images, oss, postgres_schema_url):
    """Two conductors share a PostgreSQL database, a third joins mid-batch
    and one is killed with kill -9: nobody restarts anything, the batch
    completes, every object is stored once and every event goes out once.
    (Before, the joining conductor's recover() took the running items of
    the live ones, which were then stored twice, and a killed conductor's
    items waited for their whole lease.)

    The batch is held mid-way by two gates of the image server, not by its
    speed: items 40-99 wait for the third conductor to have joined, items
    100 and on for the kill. However loaded the machine, the join and the
    kill find items running and items pending."""
    url = postgres_schema_url[0]
    join, kill = unique('join'), unique('kill')

    def item_url(i):
        if i < 40:
            return images.url(SLOW % ('peers', i))
        gate = join if i < 100 else kill
        return images.url('/gated/peers-%d.jpg?gate=%s' % (i, gate))
    opts = cluster.conductor_opts
    # A held download is a slow one, not a failed one.
    cluster.conductor_opts = {'conductor': dict(opts['conductor'],
                                                fetch_timeout=60)}
    cluster.ensure_servers()
    cluster.start_conductor(url)
    first = cluster.conductor
    second = cluster.start_peer('b', url)
    try:
        urls = [item_url(i) for i in range(BATCH)]
        batch_id, before = submit(cluster, oss, urls)
        wait_done(cluster, batch_id, 20)
        third = cluster.start_peer('c', url)
        images.named_gate(join).set()
        wait_done(cluster, batch_id, 60)
        # Kill one that is running items right now: one whose items were
        # all done at that moment would leave nothing to take back.
        killed = freeze_one_running(url, (first, second, third))
        killed.kill()
        images.named_gate(kill).set()
        end = check_batch(cluster, oss, batch_id, urls, before, timeout=90)
        # An item ran once unless the killed conductor was running it (then
        # a peer ran it again, under the same key: one object either way).
        once = {key_for(i['url']) for i in end['items']
                if i['attempts'] == 1}
        assert set(put_counts(oss, once).values()) == {1}
        # The killed one's running items were taken back by a peer.
        survivors = [d for d in (first, second, third) if d is not killed]
        assert any('took back' in d.log() for d in survivors), \
            cluster.logs()
        assert any(i['attempts'] > 1 for i in end['items'])
        # Everybody worked: the claims name their conductors.
        engine, _ = make_engine(url)
        with engine.connect() as conn:
            owners = conn.exec_driver_sql(
                'SELECT count(DISTINCT owner) FROM items').scalar()
        engine.dispose()
        assert owners >= 2
    finally:
        images.named_gate(join).set()
        images.named_gate(kill).set()
        cluster.conductor_opts = opts
        codes = cluster.stop_peers()
        code = cluster.stop_conductor()
    assert set(codes.values()) | {code} <= {0, None}, cluster.logs()


def freeze_one_running(url, daemons, timeout=30):
    """Stop (SIGSTOP) the first of ``daemons`` that owns running items and
    return it once the database shows it still owns some while frozen: a
    stopped process commits nothing more, so what it owns now is what a
    kill leaves behind (the owner id is ``host:pid:nonce``)."""
    by_pid = {d.proc.pid: d for d in daemons}
    engine, _ = make_engine(url)

    def owning_pids():
        with engine.connect() as conn:
            owners = conn.exec_driver_sql(
                "SELECT DISTINCT owner FROM items WHERE state = "
                "'running'").scalars().all()
        return {int(owner.split(':')[1]) for owner in owners}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in owning_pids() & set(by_pid):
                os.kill(pid, signal.SIGSTOP)
                if pid in owning_pids():
                    return by_pid[pid]
                os.kill(pid, signal.SIGCONT)  # finished them meanwhile
            time.sleep(0.02)
    finally:
        engine.dispose()
    raise AssertionError('no conductor ran items within %ss' % timeout)


def os_threads(pid):
    return len(os.listdir('/proc/%d/task' % pid))


@pytest.mark.parametrize('executor', ['eventlet', 'threading'])
def test_the_conductors_executor(cluster, sqlite_url, images, oss, executor):
    """executor = threading: items run on OS threads (the daemon
    re-executed itself, same pid, without eventlet's patching); eventlet:
    on green threads of one OS thread or a few."""
    cluster.ensure_servers()
    conductor = cluster.start_conductor(sqlite_url, executor=executor)
    pid = conductor.proc.pid
    urls = [images.url(SLOW % ('exec-' + executor, i)) for i in range(60)]
    batch_id, before = submit(cluster, oss, urls)
    wait_done(cluster, batch_id, 20)  # 16 items in flight
    threads = os_threads(pid)
    check_batch(cluster, oss, batch_id, urls, before)
    assert conductor.proc.pid == pid and conductor.proc.poll() is None
    if executor == 'threading':
        assert threads >= CONDUCTOR_OPTS['conductor']['max_inflight']
    else:
        assert threads < 8
    assert cluster.stop_conductor() == 0, cluster.logs()


def test_bad_urls_fail_typed_and_the_rest_is_stored(pipeline, images, oss):
    cluster = pipeline
    good = [images.url('/img/mixed-%d.jpg?kb=4' % i) for i in range(30)]
    bad = {images.url('/status/404'): ('DownloadFailed', 1),
           images.url('/html'): ('NotAnImage', 1),
           'ftp://127.0.0.1/x.jpg': ('BadURL', 1),
           # 5xx is transient: retried until item_retries is spent.
           images.url('/status/503'): ('DownloadFailed', ITEM_RETRIES + 1)}
    before = bucket_keys(oss)
    urls = good[:10] + list(bad) + good[10:]
    batch_id = cluster.submit([{'url': u} for u in urls])
    end = cluster.wait_end(batch_id, timeout=40)
    # It used to say 'done', like a batch whose every item was stored.
    assert end['state'] == 'done_with_failures'
    assert end['totals'] == {'total': 34, 'pending': 0, 'running': 0,
                             'done': 30, 'failed': 4, 'cancelled': 0}
    outcomes = {i['url']: i for i in end['items']}
    for url, (kind, attempts) in bad.items():
        item = outcomes[url]
        assert item['state'] == 'failed' and item['result'] is None
        assert item['error']['type'] == kind, item
        assert item['error']['message']
        assert item['attempts'] == attempts, item
    assert images.count('/status/404') == 1  # a 4xx is never retried
    assert bucket_keys(oss) - before == {key_for(u) for u in good}
    assert all(outcomes[u]['state'] == 'done' for u in good)


def test_a_file_too_large_for_one_message_goes_in_chunks(pipeline,
                                                         tmp_path):
    """12,000 lines: the CLI checks them, then sends them in chunks the
    conductor stores and seals as one batch (a million lines go the same
    way; before, one call carried them all and failed with MessageTooLarge
    beyond max_message_size)."""
    conf = str(pipeline.workdir / 'conductor.conf')
    urls = tmp_path / 'big.txt'
    count = 12000
    urls.write_text(''.join('http://127.0.0.1:9/big-%d.jpg\n' % i
                            for i in range(count)))
    exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq')
    proc = subprocess.run([exe, '--config-file', conf, 'batch', 'submit',
                           str(urls)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    batch_id = proc.stdout.split()[0]
    assert 'sent in chunks' in proc.stderr
    assert '--batch-id %s to resume' % batch_id in proc.stderr
    assert 'sent %d of %d items' % (count, count) in proc.stderr
    totals = pipeline.api.cancel(batch_id)
    assert totals['total'] == count
    page = pipeline.api.status(batch_id, items=True, offset=count - 1,
                               limit=5)
    assert [(i['idx'], i['url']) for i in page['items']] == [
        (count - 1, 'http://127.0.0.1:9/big-%d.jpg' % (count - 1))]


def test_cli_against_the_daemons(pipeline, images, tmp_path):
    """The rpcmq command a user types, against the running conductor."""
    conf = str(pipeline.workdir / 'conductor.conf')
    urls = tmp_path / 'urls.txt'
    urls.write_text('\n'.join(images.url('/img/cli-%d.png' % i)
                              for i in range(5)) + '\n')

    def rpcmq_cli(*args):
        exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq')
        return subprocess.run([exe, '--config-file', conf, *args],
                              capture_output=True, text=True, timeout=120)

    submitted = rpcmq_cli('batch', 'submit', str(urls), '--watch')
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.split()[0]
    assert 'done' in submitted.stderr
    status = json.loads(rpcmq_cli('batch', 'status', batch_id,
                                  '--json').stdout)
    assert status['totals']['done'] == 5 and status['state'] == 'done'

    # People get a table with dates, not JSON with epoch seconds (which
    # was all the CLI printed); scripts ask for --json.
    human = rpcmq_cli('batch', 'status', batch_id, '--items')
    assert human.returncode == 0, human.stderr
    assert '{' not in human.stdout
    created = time.strftime('%Y-%m-%d %H:%M', time.localtime(
        status['created_at']))
    for text in (batch_id, 'done', created, images.url('/img/cli-4.png')):
        assert text in human.stdout, (text, human.stdout)
    listed = rpcmq_cli('batch', 'list')
    assert batch_id in listed.stdout and created in listed.stdout
    assert '{' not in listed.stdout

    # Large batches and long lists come a page at a time, and say so.
    page = rpcmq_cli('batch', 'status', batch_id, '--items', '--offset', '1',
                     '--limit', '2', '--json')
    assert [i['idx'] for i in json.loads(page.stdout)['items']] == [1, 2]
    assert 'items 1-2 of 5; next page: --offset 3' in page.stderr
    second = rpcmq_cli('batch', 'submit', str(urls)).stdout.split()[0]
    newest = rpcmq_cli('batch', 'list', '--limit', '1', '--json')
    assert [b['batch_id'] for b in json.loads(newest.stdout)] == [second]
    assert 'next page: --offset 1' in newest.stderr
    older = rpcmq_cli('batch', 'list', '--limit', '1', '--offset', '1',
                      '--json')
    assert [b['batch_id'] for b in json.loads(older.stdout)] == [batch_id]
    assert 'next page' not in older.stderr
    missing = rpcmq_cli('batch', 'status', 'no-such-batch')
    assert missing.returncode == 1
    assert 'no-such-batch' in missing.stderr
    assert 'Traceback' not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_ctrl_c_while_watching_leaves_the_batch_running(pipeline, images,
                                                        tmp_path):
    """Ctrl-C during ``batch submit --watch`` exited 130 without a word,
    while the batch ran on."""
    conf = str(pipeline.workdir / 'conductor.conf')
    urls = tmp_path / 'slow.txt'
    urls.write_text(''.join(images.url('/slow/ctrl-c-%d.jpg?delay=0.5&'
                                       'chunks=20' % i) + '\n'
                            for i in range(3)))
    exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq')
    proc = subprocess.Popen([exe, '--config-file', conf, 'batch', 'submit',
                             str(urls), '--watch'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        batch_id = proc.stdout.readline().strip()  # printed, then watched
        deadline = time.monotonic() + 60
        while pipeline.api.status(batch_id)['totals']['running'] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert ('batch {0} continues on the conductor: rpcmq batch watch {0} '
            'to follow it, rpcmq batch cancel {0} to stop it'.format(
                batch_id)) in err, err
    assert 'Traceback' not in err
    assert pipeline.api.status(batch_id)['state'] in ('pending', 'running')
    pipeline.api.cancel(batch_id)
