"""A notification listener survives any one message (memory://).

Hostile bodies are settled and logged, and the listener goes on; an event
whose endpoint raises comes back (up to ``max_redeliveries`` times) for the
endpoints that failed on it, then is dropped with an ERROR line.
"""

import json
import logging
import threading
import time
import uuid

import pytest

from rpcmq import Target
from rpcmq.notify import Notifier, get_notification_listener
from rpcmq.notify.notifier import notification_exchange
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport

#: 100,000 nested arrays (~200 KB): json.loads raises RecursionError.
NESTED = (b'{"event_type": "e.nested", "payload": ' + b'[' * 100000
          + b']' * 100000 + b'}')


def wait_for(predicate, timeout=20.0):
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Endpoint:
    """Keeps every ``info`` call; raises on the first ``fail`` calls for
    ``fail_on`` events (``fail=None``: on all of them)."""

    def __init__(self, fail_on=None, fail=0):
        self.fail_on = fail_on
        self.fail = fail
        self.calls = []
        self._lock = threading.Lock()
        self.got = {}

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self._lock:
            self.calls.append((event_type, payload, metadata))
            self.got.setdefault(event_type, threading.Event()).set()
            tries = sum(1 for c in self.calls if c[0] == event_type)
        if event_type == self.fail_on and (self.fail is None
                                           or tries <= self.fail):
            raise RuntimeError('endpoint failure %d on %s'
                               % (tries, event_type))

    def of(self, event_type):
        with self._lock:
            return [c for c in self.calls if c[0] == event_type]

    def wait(self, event_type, timeout=20.0):
        with self._lock:
            got = self.got.setdefault(event_type, threading.Event())
        return got.wait(timeout)


@pytest.fixture
def bus():
    """(transport, listen): listen(endpoints, **kw) starts a listener on
    ``#`` of an exchange of this test alone."""
    conf = make_conf(notification_exchange='test_notify_%s'
                     % uuid.uuid4().hex[:10])
    transport = get_transport(conf, url='memory://')
    listeners = []

    def listen(endpoints, **kwargs):
        listener = get_notification_listener(
            transport, [Target(topic='#')], endpoints, **kwargs)
        listener.start()
        assert listener.ready.wait(10), 'listener not consuming'
        listeners.append(listener)
        return listener

    yield transport, listen
    for listener in listeners:
        listener.stop()
        listener.wait(10)
    transport.cleanup()


def publish_raw(transport, body, routing_key='e.raw'):
    """A body on the notification exchange, as any AMQP client may send."""
    exchange = notification_exchange(transport.conf)
    transport.driver.publish(body, exchange, routing_key,
                             declare=(exchange,))


def records(caplog, level, *words):
    return [r for r in caplog.records if r.levelno == level
            and all(w in r.getMessage() for w in words)]


def consumer_errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR
            and r.name.startswith('rpcmq.transport')]


def test_nested_json_does_not_stop_the_listener(bus, caplog):
    transport, listen = bus
    endpoint = Endpoint()
    listener = listen([endpoint])
    publish_raw(transport, NESTED, 'e.nested')
    Notifier(transport, 'test').info({}, 'e.good', {'n': 1})
    assert endpoint.wait('e.good'), 'the listener stopped consuming'
    assert [c[:2] for c in endpoint.calls] == [('e.good', {'n': 1})]
    assert listener._thread.is_alive()
    assert records(caplog, logging.WARNING, 'malformed', 'RecursionError')
    # Handled as one message: consuming was not stopped or restarted.
    assert not consumer_errors(caplog)


@pytest.mark.parametrize('body', [
    b'\xff\xfe not utf-8',
    b'[1, 2]',
    b'{"payload": 1}',
    b'{"event_type": 5}',
    b'{"event_type": "e.bad", "priority": 5}',
    b'{"event_type": "e.bad", "priority": ["info"]}',
    b'{"event_type": "e.bad", "priority": "__class__"}',
    b'{"event_type": "e.bad", "context": "not an object"}',
    b'{"event_type": "e.bad", "payload": 1' + b'0' * 5000 + b'}',
], ids=['not-utf8', 'list', 'no-event-type', 'event-type-int',
        'priority-int', 'priority-list', 'priority-dunder', 'context-str',
        'huge-int'])
def test_hostile_bodies_are_settled_and_logged(bus, caplog, body):
    transport, listen = bus
    endpoint = Endpoint()
    listen([endpoint])
    publish_raw(transport, body, 'e.bad')
    Notifier(transport, 'test').info({}, 'e.good', {'n': 2})
    assert endpoint.wait('e.good'), 'the listener stopped consuming'
    assert [c[0] for c in endpoint.calls] == ['e.good']
    assert records(caplog, logging.WARNING, 'malformed')
    assert not consumer_errors(caplog)


def test_lone_surrogates_reach_the_endpoints(bus):
    transport, listen = bus
    endpoint = Endpoint()
    listen([endpoint])
    publish_raw(transport, b'{"event_type": "e.odd", "payload": '
                           b'"\\ud800x", "context": {"\\udfff": 1}}')
    assert endpoint.wait('e.odd')
    assert endpoint.calls[0][1] == '\ud800x'


def test_endpoint_that_fails_twice_gets_the_event_three_times(bus, caplog):
    transport, listen = bus
    flaky = Endpoint(fail_on='e.flaky', fail=2)
    steady = Endpoint()
    listen([flaky, steady])
    Notifier(transport, 'test').info({}, 'e.flaky', {'n': 3})
    assert wait_for(lambda: len(flaky.of('e.flaky')) == 3), flaky.calls
    # Anything still queued for it would come before this one.
    Notifier(transport, 'test').info({}, 'e.after', {})
    assert flaky.wait('e.after')
    tries = flaky.of('e.flaky')
    assert len(tries) == 3
    assert len({c[2]['message_id'] for c in tries}) == 1
    assert all(c[1] == {'n': 3} for c in tries)
    # The endpoint that took it is not given it again.
    assert len(steady.of('e.flaky')) == 1
    assert not records(caplog, logging.ERROR, 'dropped')


@pytest.mark.parametrize('max_redeliveries', [None, 1, 0])
def test_endpoint_that_always_fails_gets_it_1_plus_max_times(
        bus, caplog, max_redeliveries):
    transport, listen = bus
    broken = Endpoint(fail_on='e.broken', fail=None)
    kwargs = {} if max_redeliveries is None else \
        {'max_redeliveries': max_redeliveries}
    expected = 1 + (3 if max_redeliveries is None else max_redeliveries)
    listen([broken], **kwargs)
    Notifier(transport, 'test').info({}, 'e.broken', {'n': 4})
    assert wait_for(lambda: records(caplog, logging.ERROR, 'dropped')), \
        broken.calls
    Notifier(transport, 'test').info({}, 'e.after', {})
    assert broken.wait('e.after')
    tries = broken.of('e.broken')
    assert len(tries) == expected
    message_id = tries[0][2]['message_id']
    (drop,) = records(caplog, logging.ERROR, 'dropped')
    assert 'e.broken' in drop.getMessage()
    assert message_id in drop.getMessage()


def test_an_endpoint_without_the_priority_is_skipped(bus):
    transport, listen = bus

    class ErrorsOnly:
        def __init__(self):
            self.got = threading.Event()

        def error(self, ctxt, publisher_id, event_type, payload, metadata):
            self.got.set()

    errors = ErrorsOnly()
    every = Endpoint()
    listen([errors, every])
    notifier = Notifier(transport, 'test')
    notifier.info({}, 'e.info', {})
    notifier.error({}, 'e.error', {})
    assert errors.got.wait(10) and every.wait('e.info')
    assert [c[0] for c in every.calls] == ['e.info']


def test_redelivered_copy_keeps_the_body(bus):
    """The copy put back in the queue is the body as it was sent."""
    transport, listen = bus
    flaky = Endpoint(fail_on='e.copy', fail=1)
    listen([flaky])
    body = json.dumps({'event_type': 'e.copy', 'payload': {'x': 'é\u20ac'},
                       'message_id': 'm-1', 'priority': 'info'})
    publish_raw(transport, body.encode(), 'e.copy')
    assert wait_for(lambda: len(flaky.of('e.copy')) == 2), flaky.calls
    assert [c[1] for c in flaky.calls] == [{'x': 'é\u20ac'}] * 2
    assert [c[2]['message_id'] for c in flaky.calls] == ['m-1'] * 2
