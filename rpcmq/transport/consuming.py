"""Long-lived consumers: kombu's ConsumerMixin run in a thread.

``Consumer`` adds what every rpcmq consumer needs to kombu's loop:
reconnects paced by the ``[rabbit]`` retry options, a ``stop()`` that also
ends a reconnect loop in progress, readiness as an Event, and a thread (a
green thread under eventlet).

A consumer is never alive but deaf: whatever ends kombu's consume loop
(a lost connection, a refused login, a bug in a message handler) is
logged once, in words, and consuming starts again after a pause, until
``stop()``. The last broker failure is kept (``last_error``, an rpcmq
``TransportError``) so that callers waiting for readiness learn *why*
there is no connection: ``wait_ready`` raises a refused login or a
refused declaration at once instead of waiting out its timeout.
"""

import contextlib
import logging
import threading
import time

from kombu.mixins import ConsumerMixin

from rpcmq.exceptions import (
    AuthenticationError,
    BrokerRefused,
    BrokerUnreachable,
)
from rpcmq.observe import metrics
from rpcmq.transport import errors

__all__ = ['Consumer', 'Stopped']

LOG = logging.getLogger(__name__)

DRAIN_INTERVAL = 0.25
RESTART_HOLD = 0.25  # after a lost connection or channel, at least
HEARTBEAT_CHECK_INTERVAL = 1.0


class Stopped(Exception):
    """Raised from a reconnect errback to leave kombu's retry loop."""


class Consumer(ConsumerMixin):
    """Base of the reply waiter, RPC listener and notification listener.

    Subclasses set ``self.driver`` and ``self.connection`` and implement
    ``get_consumers``; ``name`` names the thread and log lines.
    """

    name = 'consumer'

    def __init__(self, driver):
        self.driver = driver
        self.connection = driver.connection()
        self.ready = threading.Event()
        self.last_error = None          # a TransportError, or None
        self._changed = threading.Condition()  # ready or last_error moved
        self._stopping = threading.Event()
        self._thread = None
        self._active = None
        self._last_heartbeat = time.monotonic()

    @contextlib.contextmanager
    def establish_connection(self):
        if self._active is not None:
            # kombu's loop lost the connection (or the broker closed the
            # channel) and starts again.
            self._active = None
            self.ready.clear()
            # What the driver declared may be gone with it.
            self.driver.forget_declarations()
            metrics.RECONNECTS.labels(self.name).inc()
            self.on_connection_lost()
        with self.create_connection() as conn:
            self.driver.ensure_connection(conn, self.on_connection_error)
            self.driver.broker_connected(conn)
            yield conn

    def on_connection_lost(self):
        """Runs in the consumer thread when consuming stops on an error,
        before reconnecting."""

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.driver.settle_consumers(connection)
        self._active = connection
        with self._changed:
            self.last_error = None
            self.ready.set()
            self._changed.notify_all()

    def on_iteration(self):
        # kombu checks heartbeats only when a read times out; a consumer
        # that is never idle and never writes would miss them.
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_CHECK_INTERVAL and \
                self._active is not None:
            self._last_heartbeat = now
            self._active.heartbeat_check()

    def on_connection_error(self, exc, interval):
        if self.should_stop:
            raise Stopped()
        self._failed(errors.classify(exc, self.driver.url))
        LOG.warning('%s: broker %s unreachable (%s); retrying in %.1fs',
                    self.name, self.driver.url, exc, interval)

    def _failed(self, error):
        with self._changed:
            self.ready.clear()
            self.last_error = error
            self._changed.notify_all()

    def wait_ready(self, timeout):
        """True once consuming; False after ``timeout``; raises the broker's
        refusal (AuthenticationError, BrokerRefused) as soon as it comes."""
        def settled():
            return self.ready.is_set() or \
                errors.is_permanent(self.last_error)
        with self._changed:
            self._changed.wait_for(settled, timeout)
            if self.ready.is_set():
                return True
            if errors.is_permanent(self.last_error):
                raise self.last_error
            return False

    def problem(self):
        """None while consuming; else why not, in words (``/healthz``)."""
        if self._thread is not None and not self._thread.is_alive() and \
                not self.should_stop:
            return '%s: consumer stopped' % self.name
        if self.should_stop:
            return '%s: stopped' % self.name
        if self.ready.is_set():
            return None
        last = self.last_error
        if isinstance(last, AuthenticationError):
            return '%s: authentication refused: %s' % (self.name, last)
        if isinstance(last, BrokerRefused):
            return '%s: broker refused: %s' % (self.name, last)
        if last is not None:
            return '%s: broker unreachable: %s' % (self.name, last)
        return '%s: not consuming yet' % self.name

    def unreachable(self, within):
        """The error to raise when no connection came ``within`` (text:
        'within 5s')."""
        last = self.last_error
        return BrokerUnreachable(
            url=str(self.driver.url),
            reason='no connection %s (last error: %s)' % (
                within, getattr(last, 'reason', None) or last or 'none yet'))

    def run(self, _tokens=1, **kwargs):
        """kombu's loop, restarted after any error until ``stop()``."""
        while not self.should_stop:
            try:
                for _ in self.consume(limit=None,
                                      safety_interval=DRAIN_INTERVAL):
                    pass
            except Stopped:
                return
            except Exception as exc:
                self._restart_after(exc)

    def _restart_after(self, exc):
        if self.should_stop:
            return
        policy = self.driver.retry_policy
        if isinstance(exc, self.connection.connection_errors +
                      self.connection.channel_errors) or \
                errors.is_permanent(exc):
            error = errors.classify(exc, self.driver.url)
            self._failed(error)
            if errors.is_permanent(error):
                LOG.error('%s: %s', self.name, error)
                pause = policy['interval_max']
            else:
                # establish_connection paces the reconnect; the hold keeps
                # a channel error that repeats from spinning and, after a
                # lost connection, keeps us from landing on a live cluster
                # node while the queues of the dead one elect new leaders
                # (RabbitMQ 3.10 silently drops what a connection opened
                # in that window publishes to them).
                LOG.warning('%s lost %s: %s; reconnecting', self.name,
                            self.driver.url, exc)
                pause = max(policy['interval_start'], RESTART_HOLD)
        else:
            LOG.exception('%s stopped on an unexpected error; consuming '
                          'again', self.name)
            self._failed(None)
            pause = max(policy['interval_start'], RESTART_HOLD)
        self._stopping.wait(pause)

    def _run(self):
        self.run()

    def start_thread(self):
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='rpcmq-%s' % self.name)
        self._thread.start()

    def stop(self):
        self.should_stop = True
        self._stopping.set()

    def wait(self, timeout=None):
        """Join the thread; True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
