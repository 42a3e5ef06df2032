import threading

from rpcmq import Target
from rpcmq.notify import Notifier, get_notification_listener
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport


class Collector:
    def __init__(self):
        self.events = []
        self.got = threading.Event()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.events.append((event_type, payload, publisher_id))
        self.got.set()


def test_listener_gets_events_matching_its_pattern():
    transport = get_transport(make_conf(), url='memory://')
    collector = Collector()
    listener = get_notification_listener(
        transport, [Target(topic='batch.*')], [collector])
    listener.start()
    try:
        notifier = Notifier(transport, 'conductor.test')
        notifier.info({}, 'other.thing', {'n': 0})
        notifier.info({}, 'batch.item', {'n': 1})
        notifier.info({}, 'batch.end', {'n': 2})
        deadline = threading.Event()
        for _ in range(100):
            if len(collector.events) >= 2:
                break
            deadline.wait(0.05)
        assert collector.events == [
            ('batch.item', {'n': 1}, 'conductor.test'),
            ('batch.end', {'n': 2}, 'conductor.test')]
    finally:
        listener.stop()
        listener.wait(5)
        transport.cleanup()
