"""Client side of the conductor, for the CLI, bridges and services."""

from rpcmq.rpc.client import RPCClient
from rpcmq.target import Target

__all__ = ['ConductorAPI']


class ConductorAPI:

    def __init__(self, transport, timeout=30, topic=None):
        topic = topic or transport.conf.conductor.topic
        self.client = RPCClient(
            transport, Target(topic=topic, namespace='batch',
                              version='1.0'), timeout=timeout)

    def submit(self, items, batch_id=None, ctxt=None):
        return self.client.call(ctxt or {}, 'submit', items=items,
                                batch_id=batch_id)

    def status(self, batch_id, items=False, offset=0, limit=1000,
               ctxt=None):
        return self.client.call(ctxt or {}, 'status', batch_id=batch_id,
                                items=items, offset=offset, limit=limit)

    def list(self, limit=50, state=None, offset=0, ctxt=None):
        kwargs = {'offset': offset} if offset else {}  # older conductors
        return self.client.call(ctxt or {}, 'list', limit=limit, state=state,
                                **kwargs)

    def cancel(self, batch_id, ctxt=None):
        return self.client.call(ctxt or {}, 'cancel', batch_id=batch_id)

    def retry(self, batch_id, ctxt=None):
        return self.client.call(ctxt or {}, 'retry', batch_id=batch_id)
