"""Servers announce themselves, so a dashboard can list the live ones.

An ``Announcer`` publishes a ``server.alive`` notification right at start
and then every ``interval`` seconds, and ``server.stopped`` once at stop.
A dashboard binds ``server.*`` on the notification exchange and keeps the
servers whose last ``server.alive`` is recent: no RabbitMQ management
plugin needed, and the same on every broker rpcmq speaks (Flower does this
for Celery workers). The payload::

    {"host": "img-a", "topic": "image", "server": "img-a", "pid": 4242,
     "executor": "eventlet", "busy": 3, "size": 64,
     "started_at": 1700000000.0, "sent_at": 1700000010.0, "interval": 10.0,
     "health": null, "version": "1.2.0"}

``busy`` and ``size`` are what ``rpcmq_executor_busy`` and
``rpcmq_executor_size`` report on the status port; ``health`` is what
``/healthz`` would say (null when healthy). A server that went away
without ``server.stopped`` (killed, cut off) is the one whose heartbeats
stopped: consider it gone after two or three intervals.

Heartbeats must never cost the server anything: each is published with a
short deadline (``PUBLISH_TIMEOUT``), and one that fails is logged (a
WARNING when an outage starts, an INFO when publishing works again) and
the next is tried an interval later. While publishing fails, each
heartbeat is a single attempt (its deadline has passed already): the
driver neither retries nor logs it, so an outage costs one line here on
top of what the server's own connection logs, however long it lasts.
"""

import logging
import os
import threading
import time

import rpcmq
from rpcmq.notify.notifier import Notifier

__all__ = ['ALIVE', 'STOPPED', 'EVENTS', 'Announcer']

LOG = logging.getLogger(__name__)

ALIVE = 'server.alive'
STOPPED = 'server.stopped'
#: The routing-key pattern a listener binds to get both.
EVENTS = 'server.*'
#: Seconds a heartbeat may spend on an unreachable broker: the next one
#: supersedes it, and the thread must stay free to stop.
PUBLISH_TIMEOUT = 5.0


class Announcer:
    """Publishes the presence of ``server`` (an ``RPCServer``) on
    ``transport`` every ``interval`` seconds; 0 publishes nothing.

    It runs on its own thread (a green one in the daemons, which
    monkey-patch ``threading``), which waits on an Event between
    heartbeats, so ``stop()`` returns as soon as the last one is sent.
    """

    def __init__(self, transport, server, name='rpcmq-server',
                 interval=10.0):
        target = server.target
        self.server = server
        self.interval = float(interval)
        self.host = target.server or transport.conf.host
        self.notifier = Notifier(transport, '%s.%s' % (name, self.host),
                                 timeout=PUBLISH_TIMEOUT)
        self._fixed = {'host': self.host, 'topic': target.topic,
                       'server': target.server, 'pid': os.getpid(),
                       'executor': _kind(server.executor),
                       'interval': self.interval, 'started_at': None,
                       'version': rpcmq.__version__}
        self._stopping = False
        self._wake = threading.Event()  # stop, or announce now
        self._thread = None
        self._failing_since = None  # monotonic time of the first failure
        self._failures = 0

    def start(self):
        """Send ``server.alive`` now and every interval (on a thread)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._fixed['started_at'] = time.time()
        LOG.info('presence of %s on %s: %s every %gs on exchange %s',
                 self.host, self._fixed['topic'], ALIVE, self.interval,
                 self.notifier.transport.conf.notification_exchange)
        self._thread = threading.Thread(
            target=self._run, daemon=True,
            name='rpcmq-presence-%s' % self._fixed['topic'])
        self._thread.start()

    def stop(self, timeout=2 * PUBLISH_TIMEOUT + 1):
        """Send ``server.stopped`` and end the thread; True once it ended
        (within ``timeout``: a heartbeat in flight to an unreachable broker
        and the last one may each take up to ``PUBLISH_TIMEOUT``)."""
        if self._thread is None:
            return True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def announce_now(self):
        """Send ``server.alive`` at once (then every interval again):
        for a listener that has just started and cannot wait for the
        next heartbeat."""
        self._wake.set()

    def payload(self):
        """What ``server.alive`` says now."""
        executor = self.server.executor
        return dict(self._fixed, busy=executor.unfinished(),
                    size=executor.size, health=self._health(),
                    sent_at=time.time())

    def _run(self):
        self._send(ALIVE)
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                break
            self._send(ALIVE)
        # From this thread, so no server.alive can follow it.
        self._send(STOPPED)

    def _send(self, event_type):
        self.notifier.timeout = PUBLISH_TIMEOUT \
            if self._failing_since is None else 0.0
        try:
            self.notifier.info({}, event_type, self.payload())
        except Exception as exc:  # whatever it is, the server goes on
            self._failed(event_type, exc)
            return
        if self._failing_since is not None:
            LOG.info('presence of %s on %s: publishing again after %d '
                     'failed heartbeats (%.0fs)', self.host,
                     self._fixed['topic'], self._failures,
                     time.monotonic() - self._failing_since)
            self._failing_since, self._failures = None, 0

    def _failed(self, event_type, exc):
        self._failures += 1
        if self._failing_since is not None:
            LOG.debug('presence of %s: %s not sent either: %s', self.host,
                      event_type, exc)
            return
        self._failing_since = time.monotonic()
        LOG.warning('presence of %s on %s: could not publish %s (%s: %s); '
                    'dashboards may list this server as gone until a '
                    'heartbeat gets through. The server itself is not '
                    'affected; trying again every %gs', self.host,
                    self._fixed['topic'], event_type, type(exc).__name__,
                    exc, self.interval)

    def _health(self):
        try:
            return self.server.health()
        except Exception as exc:
            return 'health check failed: %s: %s' % (type(exc).__name__, exc)


def _kind(executor):
    """The executor's name as ``[DEFAULT] executor`` spells it."""
    return getattr(executor, 'name', None) or type(executor).__name__
