"""Long-lived consumers: kombu's ConsumerMixin run in a thread.

``Consumer`` adds what every rpcmq consumer needs to kombu's loop:
reconnects paced by the ``[rabbit]`` retry options, a ``stop()`` that also
ends a reconnect loop in progress, readiness as an Event, and a thread (a
green thread under eventlet).
"""

import contextlib
import logging
import threading
import time

from kombu.mixins import ConsumerMixin

__all__ = ['Consumer', 'Stopped']

LOG = logging.getLogger(__name__)

DRAIN_INTERVAL = 0.25
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
            self.on_connection_lost()
        with self.create_connection() as conn:
            yield self.driver.ensure_connection(conn,
                                                self.on_connection_error)

    def on_connection_lost(self):
        """Runs in the consumer thread when consuming stops on an error,
        before reconnecting."""

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.driver.settle_consumers(connection)
        self._active = connection
        self.ready.set()

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
        self.ready.clear()
        LOG.warning('%s lost %s (%s); reconnecting in %.1fs', self.name,
                    self.driver.url, exc, interval)

    def _run(self):
        try:
            self.run(safety_interval=DRAIN_INTERVAL)
        except Stopped:
            pass
        except Exception:
            LOG.exception('%s stopped on an unexpected error', self.name)

    def start_thread(self):
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='rpcmq-%s' % self.name)
        self._thread.start()

    def stop(self):
        self.should_stop = True

    def wait(self, timeout=None):
        """Join the thread; True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
