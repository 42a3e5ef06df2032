"""Who reads replies on a polling transport (memory, Redis).

A caller reads its own reply from RabbitMQ's socket (functional
test_replies.py); a polling transport's drain polls in steps of its
``polling_interval``, so a caller reading there would only add a poll
cycle per call: the consumer thread reads every reply, as it always did.
"""

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.testing.server import InProcessServer
from rpcmq.tests.scenarios.rpc import reply_readers


def test_on_the_memory_transport_the_consumer_thread_reads_replies(
        monkeypatch):
    names = reply_readers(monkeypatch)
    server = InProcessServer([DiagEndpoint(unsafe=True)])
    server.start()
    try:
        for i in range(20):
            assert server.client.call({}, 'echo', x=i) == i
    finally:
        server.stop()
    assert names == ['rpcmq-reply consumer'] * 20
