"""Run one item: one image.transfer on any server (download and upload).

If the upload fails, the server keeps the downloaded copy and says where
(``server``, ``spool_id`` in the error); the item's next attempt first
tries image.store of that copy, pinned to that server, so a store that
fails is retried without downloading again. Image servers older than 1.2
get image.fetch, then image.store pinned to the fetching server.

Errors decide the item's fate: permanent ones (bad URL, not an image,
refused address, 4xx, storage credentials...) fail it at once; the others
(timeouts, a server that died, 5xx, unreachable storage) retry it with
exponential backoff and jitter until ``item_retries`` is spent. A retry
goes back to the topic, so a dead server's item runs on another one.
"""

import logging
import random
import time

from rpcmq import exceptions as rpc_exc
from rpcmq.fetch import errors as fetch_exc
from rpcmq.observe import metrics, trace
from rpcmq.rpc.client import RPCClient
from rpcmq.storage import errors as store_exc
from rpcmq.target import Target

__all__ = ['ItemWorker', 'is_permanent']

LOG = logging.getLogger(__name__)

PERMANENT = (fetch_exc.BadURL, fetch_exc.ForbiddenAddress,
             fetch_exc.NotAnImage, fetch_exc.TooLarge, store_exc.InvalidKey,
             store_exc.StorageDenied, rpc_exc.InvalidArguments,
             rpc_exc.NoSuchMethod, rpc_exc.UnsupportedVersion,
             rpc_exc.MalformedMessage, rpc_exc.MessageTooLarge)


def is_permanent(exc):
    """True if running the item again cannot help."""
    if isinstance(exc, fetch_exc.DownloadFailed):
        status = exc.kwargs.get('status')
        return status is not None and 400 <= status < 500
    return isinstance(exc, PERMANENT)


class ItemWorker:

    def __init__(self, conf, transport, store):
        self.conf = conf.conductor
        self.store = store
        # 1.1: store takes name= and answers with the content's sha256,
        # format and size, which a resumed item no longer has from fetch.
        target = Target(topic=self.conf.image_topic, namespace='image',
                        version='1.1')
        self.fetcher = RPCClient(transport, target,
                                 timeout=self.conf.fetch_timeout)
        self.storer = RPCClient(transport, target,
                                timeout=self.conf.store_timeout)
        self.transferer = RPCClient(
            transport, Target(topic=self.conf.image_topic, namespace='image',
                              version='1.2'),
            timeout=self.conf.fetch_timeout + self.conf.store_timeout)
        self._one_call = True  # until a server says it has no 1.2
        self._traces = {}  # batch id -> traceparent (or None)

    def run(self, item):
        """Process one claimed item. Return its result, for the caller to
        complete (the scheduler completes many in one transaction); after
        a failure, record it in the store and return None."""
        ctxt = {'batch_id': item.batch_id, 'idx': item.idx,
                'attempt': item.attempts}
        started = time.monotonic()
        with trace.handling(self._trace_of(item.batch_id), 'batch item',
                            'internal', log_fields={'batch_id': item.batch_id,
                                                    'item': item.idx},
                            **{'rpcmq.batch_id': item.batch_id,
                               'rpcmq.item': item.idx}):
            try:
                result = self._transfer(ctxt, item)
            except Exception as exc:
                result = None
                self._failed(item, exc)
        metrics.ITEM_SECONDS.observe(time.monotonic() - started)
        if result is not None:
            metrics.ITEMS_FINISHED.labels('done').inc()
        return result

    def _trace_of(self, batch_id):
        """The traceparent the batch was submitted under, or None."""
        if batch_id not in self._traces:
            if len(self._traces) >= 1000:
                self._traces.clear()
            self._traces[batch_id] = self.store.batch_options(
                batch_id).get(trace.HEADER)
        return self._traces[batch_id]

    def _transfer(self, ctxt, item):
        last_error = (item.error or {}).get('type')
        if item.server and item.spool_id and \
                last_error != 'MessagingTimeout':
            # A previous attempt fetched it and its server answered: try
            # storing that copy first (after a timeout it is likely gone).
            try:
                return self._store(ctxt, item, {'server': item.server,
                                                'spool_id': item.spool_id})
            except Exception as exc:
                LOG.info('item %s/%s: stored copy on %s unusable (%s); '
                         'fetching again', item.batch_id, item.idx,
                         item.server, exc)
        if self._one_call:
            try:
                return self._transfer_once(ctxt, item)
            except rpc_exc.UnsupportedVersion:
                LOG.warning('image servers on %s have no image 1.2; using '
                            'fetch then store', self.conf.image_topic)
                self._one_call = False
        handle = self.fetcher.call(ctxt, 'fetch', url=item.url)
        self.store.record_fetched(item.batch_id, item.idx, item.attempts,
                                  handle['server'], handle['spool_id'])
        return self._store(ctxt, item, handle)

    def _transfer_once(self, ctxt, item):
        try:
            result = self.transferer.call(
                ctxt, 'transfer', url=item.url, key=item.key or None,
                name=item.name or None, keep_spool=True)
        except rpc_exc.RpcmqError as exc:
            kept = getattr(exc, 'kwargs', {}) or {}
            if kept.get('server') and kept.get('spool_id'):
                # Downloaded, not stored: the next attempt stores that copy.
                self.store.record_fetched(item.batch_id, item.idx,
                                          item.attempts, kept['server'],
                                          kept['spool_id'])
            raise
        for field in ('source_url', 'url_sha1'):
            result.pop(field, None)  # as image.store answers
        return result

    def _store(self, ctxt, item, handle):
        """Store the spooled copy under the submitted key, else the name
        (+ the image's extension), else the key the endpoint derives from
        the URL: every attempt gets the same key, so nothing is stored
        twice."""
        client = self.storer.prepare(server=handle['server'])
        result = client.call(ctxt, 'store', spool_id=handle['spool_id'],
                             key=item.key or None, name=item.name or None)
        result.pop('source_url', None)  # the item's own url
        result['server'] = handle['server']
        return result

    def _failed(self, item, exc):
        retries_left = item.tries <= self.conf.item_retries
        retry_at = None
        if retries_left and not is_permanent(exc):
            delay = min(self.conf.retry_backoff * 2 ** (item.tries - 1),
                        self.conf.retry_backoff_max)
            retry_at = time.time() + delay * random.uniform(0.5, 1.0)
        LOG.info('item %s/%s attempt %d failed: %s%s', item.batch_id,
                 item.idx, item.attempts, exc,
                 '' if retry_at is None else ' (will retry)')
        self.store.fail(item.batch_id, item.idx, item.attempts, exc,
                        retry_at=retry_at)
        if retry_at is None:
            metrics.ITEMS_FINISHED.labels('failed').inc()
        else:
            metrics.ITEM_RETRIES.inc()
