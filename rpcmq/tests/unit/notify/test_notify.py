import json
import threading

import pytest

from rpcmq import Target
from rpcmq.notify import Notifier, get_notification_listener
from rpcmq.notify.listener import parse_notification
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


def test_oslo_messaging_notifications_are_read_in_either_wire():
    inner = {'message_id': 'm1', 'publisher_id': 'nova-compute',
             'event_type': 'compute.instance.create.end',
             'priority': 'INFO', 'payload': {'id': 1},
             'timestamp': '2026-12-03 03:30:00.000001',
             '_context_user': 'alice', '_unique_id': 'u'}
    body = json.dumps({'oslo.version': '2.0',
                        'oslo.message': json.dumps(inner)}).encode()
    priority, (ctxt, publisher, event_type, payload, meta) = \
        parse_notification(body)
    assert (priority, ctxt, publisher, event_type, payload) == (
        'info', {'user': 'alice'}, 'nova-compute',
        'compute.instance.create.end', {'id': 1})
    assert meta == {'message_id': 'm1',
                    'timestamp': '2026-12-03 03:30:00.000001'}
    audit = json.dumps({'oslo.version': '2.0', 'oslo.message': json.dumps(
        dict(inner, priority='AUDIT'))})
    assert parse_notification(audit)[0] == 'audit'


def test_the_oslo_wire_needs_oslo_compat():
    transport = get_transport(make_conf(), url='memory://')
    try:
        with pytest.raises(ValueError, match='oslo_compat'):
            Notifier(transport, 'me', wire='oslo')
        with pytest.raises(ValueError, match='wire must be one of'):
            get_notification_listener(transport, [Target(topic='x')], [],
                                      wire='amqp')
    finally:
        transport.cleanup()
