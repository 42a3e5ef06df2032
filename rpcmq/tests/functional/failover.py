"""Faults under load on a RabbitCluster: who ran what, who saw what.

Shared by ``test_failover.py`` and ``tools/bench_failover.py``.

* ``Runs`` records, in the server's process, every run of every request
  id (the ``Recorder`` endpoint calls it): duplicates and losses are
  counted from it, not from logs.
* ``Ops`` records, on the client side, every cast and call: when it was
  sent, when it returned or raised, and what it raised.
* ``cast_stream`` and ``call_stream`` drive a client from threads;
  ``summary`` turns both records into the numbers the tests assert and the
  benchmark prints (sent, succeeded, failed by error, duplicated runs,
  lost, recovery seconds).
* ``place_queue`` declares a topic's quorum queue through one node, which
  makes that node its leader (RabbitMQ's ``client-local`` leader
  locator); ``url_via`` lists one node first in a cluster URL, so that
  rpcmq connects there (it fails over in the order of the URL).
"""

import collections
import json
import threading
import time

import kombu

import rpcmq
from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.server import make_conf

__all__ = ['Ops', 'Recorder', 'Runs', 'call_once', 'call_stream',
           'cast_stream', 'node_of_connection', 'place_queue', 'queue_depth',
           'queue_ready', 'restore', 'server_node', 'start_thread',
           'summary', 'url_via']

WINDOW = 1.0        # seconds: the throughput window of ``summary``
FULL_RATE = 0.9     # of the rate before the fault: "full throughput"


class Runs:
    """Every run of every request id, with its time (``time.monotonic``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = collections.defaultdict(list)
        self._times = []
        self.active = 0

    def ran(self, rid):
        now = time.monotonic()
        with self._lock:
            self._runs[rid].append(now)
            self._times.append(now)

    def total(self):
        with self._lock:
            return len(self._times)

    def ids(self):
        with self._lock:
            return set(self._runs)

    def times(self):
        with self._lock:
            return list(self._times)

    def first_run(self, rid):
        with self._lock:
            runs = self._runs.get(rid)
            return runs[0] if runs else None

    def duplicates(self):
        """{id: runs} of every id that ran more than once."""
        with self._lock:
            return {rid: len(t) for rid, t in self._runs.items()
                    if len(t) > 1}


class Recorder(DiagEndpoint):
    """``run(id)`` for casts, ``work(id, seconds)`` for calls: each run is
    recorded (in ``casts``, in ``calls``, both ``Runs``) as it starts."""

    def __init__(self, casts, calls=None):
        super().__init__(unsafe=True)
        self._casts = casts
        self._calls = casts if calls is None else calls

    def run(self, ctxt, id):
        self._casts.ran(id)

    def work(self, ctxt, id, seconds=0.0):
        record = self._calls
        record.ran(id)
        with record._lock:
            record.active += 1
        try:
            time.sleep(seconds)  # the request's own work, not a wait
        finally:
            with record._lock:
                record.active -= 1
        return id


Op = collections.namedtuple('Op', 'kind id start end error')


class Ops:
    """What the clients saw: one ``Op`` per cast or call, with
    ``error`` the name of the exception's type (None: it succeeded)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ops = []
        self.sent = collections.Counter()  # kind -> started

    def start(self, kind):
        with self._lock:
            self.sent[kind] += 1

    def add(self, kind, rid, start, error=None):
        op = Op(kind, rid, start, time.monotonic(), error)
        with self._lock:
            self._ops.append(op)
        return op

    def all(self, kind=None):
        with self._lock:
            return [op for op in self._ops if kind in (None, op.kind)]

    def ok(self, kind=None):
        return [op for op in self.all(kind) if op.error is None]

    def count(self, kind=None, error=None):
        return sum(1 for op in self.all(kind) if op.error == error)


def cast_stream(client, ops, n, pace=0.0, prefix='cast', stop=None,
                rate=None):
    """Cast ``run(id)`` ``n`` times, ``pace`` seconds apart (or ``rate``
    a second, on a fixed schedule), recording each in ``ops``; stop early
    once ``stop`` is set."""
    begin = time.monotonic()
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        rid = '%s-%d' % (prefix, i)
        ops.start('cast')
        started = time.monotonic()
        try:
            client.cast({}, 'run', id=rid)
        except Exception as exc:
            ops.add('cast', rid, started, type(exc).__name__)
        else:
            ops.add('cast', rid, started)
        # The publishing rate, not a synchronisation.
        if rate:
            time.sleep(max(0.0, begin + (i + 1) / rate - time.monotonic()))
        elif pace:
            time.sleep(pace)


def call_once(client, ops, rid, seconds=0.0):
    """Call ``work(rid, seconds)`` once, recording it in ``ops``."""
    ops.start('call')
    started = time.monotonic()
    try:
        result = client.call({}, 'work', id=rid, seconds=seconds)
    except Exception as exc:
        return ops.add('call', rid, started, type(exc).__name__)
    return ops.add('call', rid, started,
                   None if result == rid else 'WrongResult')


def call_stream(client, ops, stop, prefix, seconds=0.0, check=None):
    """Call ``work(id, seconds)`` until ``stop`` is set, recording each
    call in ``ops``; a result other than the id is recorded as the error
    ``WrongResult`` (and kept in ``check`` if given, a list)."""
    i = 0
    while not stop.is_set():
        rid = '%s-%d' % (prefix, i)
        i += 1
        ops.start('call')
        started = time.monotonic()
        try:
            result = client.call({}, 'work', id=rid, seconds=seconds)
        except Exception as exc:
            ops.add('call', rid, started, type(exc).__name__)
            continue
        if result != rid:
            ops.add('call', rid, started, 'WrongResult')
            if check is not None:
                check.append((rid, result))
        else:
            ops.add('call', rid, started)


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def summary(kind, ops, runs, kill_at):
    """The numbers of one fault, as a dict:

    sent, succeeded, failed ({error type: count}), duplicated_runs (runs
    beyond the first, over every id), lost (returned without error and
    never ran), failed_not_run (calls: raised and never ran),
    ran_after_error (raised
    to their caller, yet ran), max_op_seconds (the longest cast or call,
    from sending to its return or error), recovery_first_s (from the kill
    to the first success of a request sent after it: its run for a cast,
    its reply for a call) and recovery_full_s (from the kill until,
    counting from that first success, a ``WINDOW`` of successes holds at
    least ``FULL_RATE`` of the rate before the kill; None if never).
    """
    done = ops.all(kind)
    ran = runs.ids()
    ok = [op for op in done if op.error is None]
    failed = collections.Counter(op.error for op in done if op.error)
    dups = runs.duplicates()
    out = {
        'sent': ops.sent[kind], 'succeeded': len(ok),
        'failed': dict(sorted(failed.items())),
        'unfinished': ops.sent[kind] - len(done),
        'duplicated_runs': sum(n - 1 for n in dups.values()),
        'duplicated_ids': len(dups),
        'max_op_seconds': round(max((op.end - op.start for op in done),
                                    default=0.0), 3),
    }
    if kind == 'cast':
        out['lost'] = sum(1 for op in ok if op.id not in ran)
        # When a cast succeeded: when the server ran it (first time).
        success = sorted(t for t in (runs.first_run(op.id) for op in ok)
                         if t is not None)
        after = [runs.first_run(op.id) for op in ok if op.start >= kill_at]
    else:
        # A call that raised is not lost: its caller knows. Lost would be
        # a reply without a run.
        out['lost'] = sum(1 for op in ok if op.id not in ran)
        out['failed_not_run'] = sum(1 for op in done
                                    if op.error and op.id not in ran)
        success = sorted(op.end for op in ok)
        after = [op.end for op in ok if op.start >= kill_at]
    out['ran_after_error'] = sum(1 for op in done
                                 if op.error and op.id in ran)
    after = [t for t in after if t is not None]
    first = min(after, default=None)
    out['recovery_first_s'] = None if first is None else round(
        first - kill_at, 3)
    out['recovery_full_s'] = _full(success, kill_at, first)
    return out


def _full(success, kill_at, first):
    """Seconds from ``kill_at`` to the end of the first WINDOW, starting
    at or after ``first``, with the rate before the kill (None if none)."""
    before = [t for t in success if t < kill_at]
    if first is None or len(before) < 2:
        return None
    span = before[-1] - before[0]
    if span <= 0:
        return None
    rate = (len(before) - 1) / span
    need = max(1, int(FULL_RATE * rate * WINDOW))
    later = [t for t in success if t >= first]
    for i, t in enumerate(later):
        j = i + need - 1
        if j < len(later) and later[j] - t <= WINDOW:
            return round(later[j] - kill_at, 3)
    return None


# -- the cluster -------------------------------------------------------------

def url_via(cluster, first, exclude=()):
    """The cluster's URL with node ``first`` listed first (rpcmq connects
    to it, and fails over to the others in order); ``exclude`` left out."""
    rest = [i for i in range(cluster.size) if i != first and
            i not in exclude]
    return cluster.url(indexes=[first] + rest)


def place_queue(cluster, topic, via, exchange='rpcmq', timeout=30,
                more=()):
    """Declare ``topic``'s request queue (rpcmq's own arguments: a quorum
    queue bound to ``exchange``), and the queues named in ``more`` (server
    queues ``<topic>.<server>``, say), through node ``via``; return the
    index of the leader of ``topic``'s."""
    transport = rpcmq.get_transport(make_conf(), url=cluster.url(
        indexes=[via]))
    try:
        driver = transport.driver
        driver.declare([driver.topic_queue(exchange, name)
                        for name in (topic,) + tuple(more)],
                       time.monotonic() + timeout)
    finally:
        transport.cleanup()
    return cluster.queue_leader(topic)


def queue_depth(cluster, name, field='messages'):
    """Messages in queue ``name`` (``field``: ``messages``,
    ``messages_ready`` or ``messages_unacknowledged``); None if there is
    no such queue."""
    via = next(i for i in range(cluster.size) if i not in cluster.killed)
    out = cluster.ctl(via, 'list_queues', '--quiet', '--formatter', 'json',
                      'name', field).stdout
    for q in json.loads(out):
        if q['name'] == name:
            return q[field]
    return None


def queue_ready(cluster, name):
    """Messages ready in queue ``name`` now, as its leader says (AMQP
    ``queue.declare-ok``; list_queues' numbers lag by seconds)."""
    via = next(i for i in range(cluster.size) if i not in cluster.killed)
    with kombu.Connection('amqp://guest:guest@127.0.0.1:%d//'
                          % cluster.ports[via]) as conn:
        return conn.default_channel.queue_declare(
            name, passive=True).message_count


def node_of_connection(cluster, conn):
    """Index of the node a connected kombu connection talks to."""
    return cluster.node_of_port(conn.connection.sock.getpeername()[1])


def server_node(cluster, server):
    """Index of the node an RPCServer consumes from (None while it has no
    connection)."""
    conn = server._listener._active
    if conn is None or not server._listener.ready.is_set():
        return None
    try:
        return node_of_connection(cluster, conn)
    except (OSError, AttributeError, ValueError):
        return None


def restore(cluster, timeout=120):
    """Start every killed node again; return once all run, clustered."""
    for i in sorted(cluster.killed):
        cluster.restart(i, timeout=timeout)
    cluster.wait_running(set(range(cluster.size)), timeout)
