"""The conductor's RPC endpoint: namespace ``batch`` on topic ``conductor``."""

from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.schema import ITEM_STATES
from rpcmq.observe import trace
from rpcmq.rpc.dispatcher import expected_exceptions
from rpcmq.target import Target

__all__ = ['BatchEndpoint']


def _traced():
    """Batch options that keep the submit's trace for its items."""
    tp = trace.current()
    return {} if tp is None else {trace.HEADER: tp}


#: Past any batch, and within every database's integers.
MAX_OFFSET = 2 ** 53


def _page(offset, limit):
    """``offset`` and ``limit`` as integers a query takes: an offset past
    every row gives an empty page, not an OverflowError."""
    return (min(MAX_OFFSET, max(0, int(offset))),
            min(MAX_OFFSET, max(1, int(limit))))


def _item_states(states):
    """``states`` checked: None, or a list of item states."""
    if states is None:
        return None
    if not isinstance(states, list) or not all(
            s in ITEM_STATES for s in states):
        raise InvalidBatch(reason='states must be a list of item states '
                                  '(%s), not %r' % (', '.join(ITEM_STATES),
                                                    states))
    return states


class BatchEndpoint:
    """``batch.submit``, ``status``, ``list``, ``cancel`` and ``retry``;
    1.1: ``create``, ``add_items`` and ``seal`` for batches too large for
    one message (see ``chunks``); 1.2: ``status`` pages the items in
    chosen ``states`` only."""

    target = Target(namespace='batch', version='1.2')

    def __init__(self, store, scheduler):
        self.store = store
        self.scheduler = scheduler

    @expected_exceptions(InvalidBatch)
    def submit(self, ctxt, items, batch_id=None):
        """Record a batch of ``{"url", "key"?, "name"?}`` items; return its
        id. Submitting an existing ``batch_id`` again adds nothing."""
        batch_id, created = self.store.submit(items, batch_id=batch_id,
                                              options=_traced())
        if created:
            self.scheduler.wake()
        return batch_id

    @expected_exceptions(InvalidBatch)
    def create(self, ctxt, batch_id, total, digest, options=None):
        """Open a batch of ``total`` items with ``digest``; True if new."""
        options = dict(options or {}, **_traced()) \
            if isinstance(options, dict) or options is None else options
        return self.store.create(batch_id, int(total), digest, options)

    @expected_exceptions(InvalidBatch, BatchNotFound)
    def add_items(self, ctxt, batch_id, offset, items):
        """Store one chunk at ``offset``; how many items were new."""
        return self.store.add_items(batch_id, int(offset), items)

    @expected_exceptions(InvalidBatch, BatchNotFound)
    def seal(self, ctxt, batch_id):
        """Let the batch run; False if it was sealed before."""
        sealed = self.store.seal(batch_id)
        self.scheduler.wake()
        return sealed

    @expected_exceptions(BatchNotFound, InvalidBatch)
    def status(self, ctxt, batch_id, items=False, offset=0, limit=1000,
               states=None):
        """Totals; with ``items``, outcomes ``offset`` .. ``offset+limit``
        (page through large batches: a reply must fit max_message_size),
        of the items in ``states`` only when given (a list of item
        states: ``pending``, ``running``, ``done``, ``failed``,
        ``cancelled``)."""
        status = self.store.status(batch_id)
        if items:
            offset, limit = _page(offset, limit)
            status['items'] = self.store.outcomes(
                batch_id, states=_item_states(states), offset=offset,
                limit=limit)
            status['offset'] = offset
        return status

    def list(self, ctxt, limit=50, state=None, offset=0):
        """The newest batches, ``limit`` of them from ``offset``."""
        offset, limit = _page(offset, limit)
        return self.store.list_batches(limit=limit, state=state,
                                       offset=offset)

    @expected_exceptions(BatchNotFound)
    def cancel(self, ctxt, batch_id):
        return self.store.cancel(batch_id)

    @expected_exceptions(BatchNotFound)
    def retry(self, ctxt, batch_id):
        count = self.store.retry_failed(batch_id)
        if count:
            self.scheduler.wake()
        return {'batch_id': batch_id, 'retried': count}
