"""Client side of the conductor, for the CLI, bridges and services."""

import uuid

from rpcmq.conductor.validation import items_digest, validate_items
from rpcmq.observe import trace
from rpcmq.rpc import wire
from rpcmq.rpc.client import RPCClient
from rpcmq.target import Target

__all__ = ['ConductorAPI']

#: Items per add_items call at most; fewer when they are long.
CHUNK_ITEMS = 5000


class ConductorAPI:

    def __init__(self, transport, timeout=30, topic=None):
        topic = topic or transport.conf.conductor.topic
        self.max_message_size = transport.conf.max_message_size
        self.client = RPCClient(
            transport, Target(topic=topic, namespace='batch',
                              version='1.0'), timeout=timeout)

    def submit(self, items, batch_id=None, ctxt=None):
        return self.client.call(ctxt or {}, 'submit', items=items,
                                batch_id=batch_id)

    def submit_chunked(self, items, batch_id=None, progress=None,
                       chunk_items=CHUNK_ITEMS, ctxt=None):
        """Submit a batch of any size: validate it here, open it, add it a
        chunk at a time (each well under ``max_message_size``) and seal
        it; return the batch id. Run again with the same ``batch_id``
        after an interruption: what was added is not added twice.
        ``progress(sent, total)`` is called after each chunk.
        """
        rows = validate_items(items)
        batch_id = batch_id or uuid.uuid4().hex
        client = self.client.prepare(version='1.1')
        ctxt = dict(ctxt or {})
        # One trace for the whole submission, whatever its chunks.
        ctxt.setdefault(trace.HEADER, trace.outgoing(ctxt))
        client.call(ctxt, 'create', batch_id=batch_id, total=len(rows),
                    digest=items_digest(rows))
        for offset, chunk in self._chunks(rows, chunk_items):
            client.call(ctxt, 'add_items', batch_id=batch_id, offset=offset,
                        items=chunk)
            if progress is not None:
                progress(offset + len(chunk), len(rows))
        client.call(ctxt, 'seal', batch_id=batch_id)
        return batch_id

    def _chunks(self, rows, chunk_items):
        """(offset, items) with at most ``chunk_items`` items and half the
        message size limit in bytes each."""
        budget = self.max_message_size // 2
        offset, chunk, size = 0, [], 0
        for row in rows:
            item = {k: v for k, v in row.items() if v is not None}
            cost = len(wire.encode(item)) + 2
            if chunk and (len(chunk) >= chunk_items or size + cost > budget):
                yield offset, chunk
                offset, chunk, size = offset + len(chunk), [], 0
            chunk.append(item)
            size += cost
        if chunk:
            yield offset, chunk

    def status(self, batch_id, items=False, offset=0, limit=1000,
               states=None, ctxt=None):
        """Totals of a batch; with ``items``, a page of its item outcomes
        (those in ``states`` only, when given: needs a 1.2 conductor)."""
        if states is None:  # what older conductors understand
            return self.client.call(ctxt or {}, 'status', batch_id=batch_id,
                                    items=items, offset=offset, limit=limit)
        return self.client.prepare(version='1.2').call(
            ctxt or {}, 'status', batch_id=batch_id, items=items,
            offset=offset, limit=limit, states=list(states))

    def list(self, limit=50, state=None, offset=0, ctxt=None):
        kwargs = {'offset': offset} if offset else {}  # older conductors
        return self.client.call(ctxt or {}, 'list', limit=limit, state=state,
                                **kwargs)

    def cancel(self, batch_id, ctxt=None):
        return self.client.call(ctxt or {}, 'cancel', batch_id=batch_id)

    def retry(self, batch_id, ctxt=None):
        return self.client.call(ctxt or {}, 'retry', batch_id=batch_id)
