"""Notification listeners on real brokers: one hostile message costs that
message only, and an event an endpoint failed on comes back to it."""

import logging
import threading
import time
import uuid

import kombu
import pytest

from rpcmq import Target
from rpcmq.notify import Notifier, get_notification_listener
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.conftest import RABBIT_URL
from rpcmq.transport import get_transport

#: 100,000 nested arrays (~200 KB): json.loads raises RecursionError.
NESTED = (b'{"event_type": "e.nested", "payload": ' + b'[' * 100000
          + b']' * 100000 + b'}')


class Endpoint:
    """Keeps ``info`` calls; raises on the first ``fail`` calls for
    ``fail_on`` events (``fail=None``: always)."""

    def __init__(self, fail_on=None, fail=0):
        self.fail_on, self.fail = fail_on, fail
        self.calls = []
        self._lock = threading.Lock()
        self._got = {}

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self._lock:
            self.calls.append((event_type, payload, metadata))
            self._event(event_type).set()
            tries = len(self._of(event_type))
        if event_type == self.fail_on and (self.fail is None
                                           or tries <= self.fail):
            raise RuntimeError('failure %d on %s' % (tries, event_type))

    def _event(self, event_type):
        return self._got.setdefault(event_type, threading.Event())

    def _of(self, event_type):
        return [c for c in self.calls if c[0] == event_type]

    def of(self, event_type):
        with self._lock:
            return self._of(event_type)

    def wait(self, event_type, timeout=30):
        with self._lock:
            got = self._event(event_type)
        return got.wait(timeout)


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Bus:
    """A transport, an exchange and a pool queue of this test alone."""

    def __init__(self, url):
        self.url = url
        self.exchange = 'test_notify_%s' % uuid.uuid4().hex[:10]
        self.pool = self.exchange + '_pool'
        self.transport = get_transport(
            make_conf(notification_exchange=self.exchange), url=url)
        self.listener = None
        self.queues = []

    def listen(self, endpoints, pooled=True, **kwargs):
        """A listener on the pool queue, or on its own exclusive one."""
        self.listener = get_notification_listener(
            self.transport, [Target(topic='e.*')], endpoints,
            pool=self.pool if pooled else None, **kwargs)
        self.queues.append(self.listener._queue_name)
        self.listener.start()
        assert self.listener.ready.wait(15), 'listener not consuming'
        return self.listener

    def stop(self):
        if self.listener is not None:
            self.listener.stop()
            assert self.listener.wait(15)
            self.listener = None

    def close(self):
        self.stop()
        self.transport.cleanup()
        delete_entities(self.url, self.queues, [self.exchange])


@pytest.fixture
def rabbit(rabbit_url):
    bus = Bus(rabbit_url)
    yield bus
    bus.close()


@pytest.fixture
def broker(url):
    bus = Bus(url)
    yield bus
    bus.close()


def amqp_connection():
    return kombu.Connection(RABBIT_URL.replace('rabbit://', 'amqp://'),
                            connect_timeout=5)


def messages_in(pool):
    """Messages ready in a pool queue (unacked ones are back after the
    listener's connection closed)."""
    with amqp_connection() as conn:
        return conn.default_channel.queue_declare(
            pool, passive=True).message_count


def consumer_errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR
            and r.name.startswith('rpcmq.transport')]


def test_nested_json_then_a_notification_arrives(rabbit, caplog):
    endpoint = Endpoint()
    listener = rabbit.listen([endpoint])
    exchange = kombu.Exchange(rabbit.exchange, type='topic', durable=True)
    with amqp_connection() as conn:
        conn.Producer().publish(
            NESTED, exchange=exchange, routing_key='e.nested',
            content_type='application/json', content_encoding='utf-8',
            declare=[exchange])
    Notifier(rabbit.transport, 'test').info({}, 'e.good', {'n': 1})
    assert endpoint.wait('e.good'), 'the listener stopped consuming'
    assert [c[:2] for c in endpoint.calls] == [('e.good', {'n': 1})]
    assert listener._thread.is_alive()
    assert not consumer_errors(caplog)
    rabbit.stop()
    # The nested one was settled: nothing came back to the queue.
    assert messages_in(rabbit.pool) == 0


def test_a_pool_queue_is_a_quorum_queue_like_the_request_queues(rabbit):
    rabbit.listen([Endpoint()])
    with amqp_connection() as conn:
        # Declaring it as a classic queue is refused: it is a quorum one.
        with pytest.raises(Exception, match="x-queue-type"):
            conn.default_channel.queue_declare(rabbit.pool, durable=True,
                                               auto_delete=False)


@pytest.mark.parametrize('pooled', [True, False], ids=['pool', 'own-queue'])
def test_events_come_back_to_the_endpoints_that_failed(broker, caplog,
                                                       pooled):
    flaky = Endpoint(fail_on='e.flaky', fail=2)
    broken = Endpoint(fail_on='e.broken', fail=None)
    broker.listen([flaky, broken], pooled=pooled, max_redeliveries=2)
    notifier = Notifier(broker.transport, 'test')
    notifier.info({}, 'e.flaky', {'n': 1})
    notifier.info({}, 'e.broken', {'n': 2})

    def dropped():
        return [r for r in caplog.records if r.levelno == logging.ERROR
                and 'dropped' in r.getMessage()]

    assert wait_for(lambda: len(flaky.of('e.flaky')) == 3 and dropped()), \
        (flaky.calls, broken.calls)
    notifier.info({}, 'e.after', {})  # behind any copy still queued
    assert flaky.wait('e.after') and broken.wait('e.after')
    assert len(flaky.of('e.flaky')) == 3
    assert len(broken.of('e.flaky')) == 1  # took it the first time
    assert len(broken.of('e.broken')) == 3  # 1 + max_redeliveries
    assert len(flaky.of('e.broken')) == 1
    (drop,) = dropped()
    message_id = broken.of('e.broken')[0][2]['message_id']
    assert 'e.broken' in drop.getMessage()
    assert message_id in drop.getMessage()
    assert {c[2]['message_id'] for c in broken.of('e.broken')} == \
        {message_id}
    if pooled and broker.url == RABBIT_URL:
        broker.stop()
        assert messages_in(broker.pool) == 0


def test_events_sent_together_arrive_once_each_in_order(broker):
    """``notify_many`` writes a round of events together (one socket
    write on RabbitMQ); each arrives once, in order, and ``flush`` says
    when the broker has them all."""
    endpoint = Endpoint()
    broker.listen([endpoint])
    notifier = Notifier(broker.transport, 'test')
    notifier.notify_many({'user': 'u'}, [('e.many', {'n': n})
                                         for n in range(300)])
    assert notifier.flush(15)
    assert wait_for(lambda: len(endpoint.of('e.many')) >= 300)
    assert [c[1]['n'] for c in endpoint.of('e.many')] == list(range(300))
