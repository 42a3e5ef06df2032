"""Servers announce themselves on memory://, as a dashboard sees them:
through a notification listener bound to ``server.*``."""

import logging
import os
import threading
import time
import uuid

import pytest

import rpcmq
from rpcmq import Target
from rpcmq.exceptions import BrokerUnreachable
from rpcmq.notify import get_notification_listener
from rpcmq.observe import presence
from rpcmq.observe.presence import ALIVE, EVENTS, STOPPED, Announcer
from rpcmq.testing.server import InProcessServer, make_conf
from rpcmq.tests.presence import Seen
from rpcmq.tests.scenarios.rpc import wait_for


class Blocking:
    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def hold(self, ctxt):
        self.entered.set()
        assert self.release.wait(30), 'never released'

    def ping(self, ctxt):
        return 'pong'


@pytest.fixture
def env():
    """A server (threading executor, 4 workers) and a listener bound to
    ``server.*``, on a notification exchange of this test's own."""
    conf = make_conf(notification_exchange='presence_%s' % uuid.uuid4().hex,
                     executor_thread_pool_size=4)
    endpoint, seen = Blocking(), Seen()
    with InProcessServer([endpoint], server='img-7', conf=conf) as srv:
        listener = get_notification_listener(
            srv.transport, [Target(topic=EVENTS)], [seen])
        listener.start()
        assert listener.ready.is_set(), 'notification listener not ready'
        srv.endpoint, srv.seen = endpoint, seen
        announcers = srv.announcers = []

        def announce(interval):
            announcer = Announcer(srv.transport, srv.server,
                                  interval=interval)
            announcers.append(announcer)
            announcer.start()
            return announcer
        srv.announce = announce
        try:
            yield srv
        finally:
            endpoint.release.set()
            for announcer in announcers:
                announcer.stop()
            listener.stop()
            listener.wait(5)


def test_a_server_says_it_is_alive_right_at_start(env):
    env.announce(interval=30)  # only the first one, sent at once
    event_type, payload, publisher = env.seen.wait_for(
        lambda t, p, _: t == ALIVE, what=ALIVE)
    assert publisher == 'rpcmq-server.img-7'
    assert payload['topic'] == env.topic
    assert payload['host'] == payload['server'] == 'img-7'
    assert payload['executor'] == 'threading'
    assert (payload['busy'], payload['size']) == (0, 4)
    assert payload['pid'] == os.getpid()
    assert payload['interval'] == 30.0
    assert payload['health'] is None
    assert payload['version'] == rpcmq.__version__
    assert payload['started_at'] <= payload['sent_at']


def test_a_busy_server_says_how_busy(env):
    env.announce(interval=0.05)
    env.client.cast({}, 'hold')
    assert env.endpoint.entered.wait(10), 'the cast never ran'
    _, payload, _ = env.seen.wait_for(
        lambda t, p, _: t == ALIVE and p['busy'] >= 1, what='busy >= 1')
    assert payload['size'] == 4
    env.endpoint.release.set()
    env.seen.wait_for(lambda t, p, _: t == ALIVE and p['busy'] == 0 and
                      p['sent_at'] > payload['sent_at'], what='busy 0 again')


def test_server_stopped_is_the_last_word(env):
    announcer = env.announce(interval=0.05)
    env.seen.wait_for(lambda t, p, _: t == ALIVE)
    assert announcer.stop(timeout=10)
    _, payload, _ = env.seen.wait_for(lambda t, p, _: t == STOPPED,
                                      what=STOPPED)
    assert payload['topic'] == env.topic and payload['host'] == 'img-7'
    # Nothing follows it: a marker sent after it is the next event.
    env.announce(interval=30)
    env.seen.wait_for(lambda t, p, _: t == ALIVE and
                      p['started_at'] > payload['sent_at'])
    types = env.seen.types()
    assert types[types.index(STOPPED) + 1:] == [ALIVE]


def test_a_listener_that_just_started_can_ask_for_a_heartbeat_now(env):
    announcer = env.announce(interval=300)  # the next one in 5 minutes
    env.seen.wait_for(lambda t, p, _: t == ALIVE)
    announcer.announce_now()
    env.seen.wait_for(lambda t, p, _: env.seen.types().count(ALIVE) == 2,
                      what='a second server.alive at once')
    assert announcer.stop(timeout=10)
    env.seen.wait_for(lambda t, p, _: t == STOPPED, what=STOPPED)
    assert env.seen.types() == [ALIVE, ALIVE, STOPPED]


def test_interval_zero_sends_nothing(env):
    quiet = env.announce(interval=0)
    assert not [t for t in threading.enumerate()
                if t.name == 'rpcmq-presence-%s' % env.topic]
    assert quiet.stop()
    env.announce(interval=30)  # a marker behind whatever the first sent
    env.seen.wait_for(lambda t, p, _: t == ALIVE)
    assert env.seen.types() == [ALIVE]


def test_stop_does_not_wait_for_the_next_heartbeat(env):
    announcer = env.announce(interval=3600)
    env.seen.wait_for(lambda t, p, _: t == ALIVE)
    assert announcer.stop(timeout=5)
    env.seen.wait_for(lambda t, p, _: t == STOPPED)


class Outage:
    """The notification exchange of ``driver`` unreachable while
    ``down`` is set; calls and replies still go through."""

    def __init__(self, driver, exchange_name, monkeypatch):
        self.down = threading.Event()
        self.failures = 0
        self.budgets = []  # seconds each failed publish had to succeed
        self._changed = threading.Condition()
        publish = driver.publish

        def flaky_publish(body, exchange, routing_key, **kwargs):
            if self.down.is_set() and \
                    getattr(exchange, 'name', None) == exchange_name:
                with self._changed:
                    self.failures += 1
                    self.budgets.append(kwargs['deadline'] -
                                        time.monotonic())
                    self._changed.notify_all()
                raise BrokerUnreachable(url='memory://',
                                        reason='connection refused')
            return publish(body, exchange, routing_key, **kwargs)
        monkeypatch.setattr(driver, 'publish', flaky_publish)

    def wait_failures(self, count, timeout=10):
        with self._changed:
            assert self._changed.wait_for(lambda: self.failures >= count,
                                          timeout), self.failures


def test_an_outage_is_logged_once_and_the_heartbeats_come_back(
        env, monkeypatch, caplog):
    outage = Outage(env.transport.driver, env.conf.notification_exchange,
                    monkeypatch)
    outage.down.set()
    caplog.set_level(logging.INFO, logger=presence.__name__)
    env.announce(interval=0.05)
    outage.wait_failures(4)
    # The server goes on serving meanwhile.
    assert env.client.call({}, 'ping') == 'pong'
    # The first heartbeat of an outage may retry for a few seconds; the
    # next ones are one attempt each (their deadline has passed).
    assert 0 < outage.budgets[0] <= presence.PUBLISH_TIMEOUT
    assert max(outage.budgets[1:]) <= 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert 'could not publish server.alive' in warnings[0].getMessage()
    assert 'connection refused' in warnings[0].getMessage()
    outage.down.clear()
    env.seen.wait_for(lambda t, p, _: t == ALIVE, what='alive after outage')

    def back():  # logged once the publish returned: maybe after delivery
        return [r for r in caplog.records
                if 'publishing again' in r.getMessage()]
    assert wait_for(back), caplog.text
    assert len(back()) == 1 and back()[0].levelno == logging.INFO
    # A second outage is a second warning.
    outage.down.set()
    failed = outage.failures
    outage.wait_failures(failed + 2)
    assert len([r for r in caplog.records
                if r.levelno == logging.WARNING]) == 2
