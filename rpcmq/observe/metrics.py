"""rpcmq's Prometheus metrics, in the process's default registry.

Every daemon serves them on ``/metrics`` when ``[status] port`` is set
(see ``observe.http``); a program embedding rpcmq can serve
``prometheus_client.REGISTRY`` itself. Label values are bounded: topics,
method names and error type names come from configuration and code, never
from message bodies (a method a caller invents is counted as
``<unknown>``).
"""

import weakref

from prometheus_client import Counter, Histogram, disable_created_metrics
from prometheus_client.core import REGISTRY, GaugeMetricFamily

disable_created_metrics()  # *_created series: noise for every counter

__all__ = [
    'REQUESTS', 'REQUEST_SECONDS', 'CALL_SECONDS', 'DROPPED', 'RECONNECTS',
    'ITEMS_FINISHED', 'ITEM_SECONDS', 'ITEM_RETRIES', 'IMAGE_BYTES',
    'IMAGE_FAILURES', 'series', 'watch_executor',
    'watch_confirmer', 'watch_conductor',
]

#: Latency buckets (seconds) from a local echo to a slow image transfer.
BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
           5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    'rpcmq_requests', 'Requests a server handled, by outcome: ok, '
    'expected (an error the endpoint declared), error (the endpoint '
    'raised), rejected (malformed, unsigned, too large, no such method).',
    ['topic', 'method', 'kind', 'outcome'])
REQUEST_SECONDS = Histogram(
    'rpcmq_request_seconds', 'Time an endpoint method ran, per request.',
    ['topic', 'method'], buckets=BUCKETS)
CALL_SECONDS = Histogram(
    'rpcmq_client_call_seconds', 'Time a client waited for each reply, '
    'by outcome (ok, remote_error, timeout, transport_error).',
    ['topic', 'method', 'outcome'], buckets=BUCKETS)
DROPPED = Counter(
    'rpcmq_messages_dropped', 'Requests a server settled without running '
    'them, by reason: expired (deadline passed), duplicate, '
    'dead_lettered (delivery limit), refused (malformed or unsigned cast), '
    'interrupted (a call delivered again after its server went away).',
    ['topic', 'reason'])
RECONNECTS = Counter(
    'rpcmq_reconnects', 'Times a consumer lost its broker connection or '
    'channel and consumed again.', ['consumer'])
ITEMS_FINISHED = Counter(
    'rpcmq_conductor_items_finished', 'Batch items this conductor '
    'finished, by final state (done, failed).', ['state'])
ITEM_SECONDS = Histogram(
    'rpcmq_conductor_item_seconds', 'Time from an item\'s claim to its '
    'outcome, per attempt.', buckets=BUCKETS)
ITEM_RETRIES = Counter(
    'rpcmq_conductor_item_retries', 'Item attempts that failed and were '
    'scheduled to run again.')
IMAGE_BYTES = Counter(
    'rpcmq_image_bytes', 'Image bytes moved by the image endpoint, by '
    'direction (downloaded, stored).', ['direction'])
IMAGE_FAILURES = Counter(
    'rpcmq_image_failures', 'Image endpoint failures by error type '
    '(BadURL, DownloadFailed, TooLarge, StorageUnavailable...).', ['type'])


_SERIES = {}


def series(metric, *labels):
    """``metric.labels(*labels)``, looked up once per metric and label
    values: ``labels()`` checks and locks on every call, too slow for a
    message's hot path. Label values are bounded (see above)."""
    key = (metric, labels)
    found = _SERIES.get(key)
    if found is None:
        found = _SERIES[key] = metric.labels(*labels)
    return found


class _Watched:
    """Gauges read at scrape time from live objects (weakly held: a
    stopped server or a closed transport drops out by itself)."""

    def __init__(self):
        self.executors = weakref.WeakKeyDictionary()   # executor -> topic
        self.confirmers = weakref.WeakSet()
        self.conductors = weakref.WeakSet()             # BatchStore objects

    def describe(self):
        return []

    def collect(self):
        busy = GaugeMetricFamily(
            'rpcmq_executor_busy', 'Requests a server has taken and not '
            'finished (running or waiting for a worker).', labels=['topic'])
        size = GaugeMetricFamily(
            'rpcmq_executor_size', 'Workers a server runs requests on.',
            labels=['topic'])
        for executor, topic in list(self.executors.items()):
            busy.add_metric([topic], executor.unfinished())
            size.add_metric([topic], executor.size)
        yield busy
        yield size
        pending = GaugeMetricFamily(
            'rpcmq_confirms_pending', 'Casts published and not yet '
            'confirmed by the broker.')
        pending.add_metric([], sum(c.pending() for c in list(
            self.confirmers)))
        yield pending
        yield from self._conductor()

    def _conductor(self):
        items = GaugeMetricFamily(
            'rpcmq_conductor_items', 'Items of every batch in the database, '
            'by state.', labels=['state'])
        batches = GaugeMetricFamily(
            'rpcmq_conductor_batches', 'Batches in the database, by state.',
            labels=['state'])
        unsent = GaugeMetricFamily(
            'rpcmq_conductor_events_unsent', 'Finished items whose '
            'batch.item event is not sent yet.')
        stores = list(self.conductors)
        if not stores:
            return
        counts = stores[0].metrics_snapshot()
        for state, n in sorted(counts['items'].items()):
            items.add_metric([state], n)
        for state, n in sorted(counts['batches'].items()):
            batches.add_metric([state], n)
        unsent.add_metric([], counts['events_unsent'])
        yield items
        yield batches
        yield unsent


_WATCHED = _Watched()
REGISTRY.register(_WATCHED)


def watch_executor(executor, topic):
    _WATCHED.executors[executor] = topic


def watch_confirmer(confirmer):
    _WATCHED.confirmers.add(confirmer)


def watch_conductor(store):
    _WATCHED.conductors.add(store)
