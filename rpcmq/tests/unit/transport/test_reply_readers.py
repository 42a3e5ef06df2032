"""Who reads replies on a polling transport (memory, Redis).

A caller reads its own reply from RabbitMQ's socket (functional
test_replies.py); a polling transport's drain polls in steps of its
``polling_interval``, so a caller reading there would only add a poll
cycle per call: the consumer thread reads every reply, as it always did.
"""

import threading

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.server import InProcessServer
from rpcmq.transport import reply


def test_on_the_memory_transport_the_consumer_thread_reads_replies(
        monkeypatch):
    names = []
    on_reply = reply.ReplyWaiter._on_reply

    def recording(self, message):
        names.append(threading.current_thread().name)
        return on_reply(self, message)
    monkeypatch.setattr(reply.ReplyWaiter, '_on_reply', recording)
    server = InProcessServer([DiagEndpoint(unsafe=True)])
    server.start()
    try:
        for i in range(20):
            assert server.client.call({}, 'echo', x=i) == i
    finally:
        server.stop()
    assert names == ['rpcmq-reply consumer'] * 20
