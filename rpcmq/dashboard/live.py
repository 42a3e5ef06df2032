"""What the dashboard hears: batch.* events for its live pages, and the
servers' server.alive / server.stopped announcements.

One notification listener per dashboard process, on its own exclusive
queue (every dashboard hears every event; none takes them from another).
Events arrive on the listener's thread; ``subscribe`` hands those of one
batch to an asyncio queue of the page that follows it. A page that reads
slowly loses item events, never progress: its totals come from the
conductor (``batch.status``) and events only say when to ask again.
"""

import asyncio
import threading
import time

from rpcmq.notify import get_notification_listener
from rpcmq.target import Target

__all__ = ['Live', 'QUEUE_SIZE']

#: Events a page may have waiting; more are dropped (totals still come).
QUEUE_SIZE = 1000
#: server.* events of rpcmq-server (observe.presence).
SERVER_EVENTS = ('server.alive', 'server.stopped')


class Live:
    """The notification endpoint of a dashboard, and its subscriptions."""

    def __init__(self, transport):
        self._transport = transport
        self._lock = threading.Lock()
        self._pages = {}      # batch_id -> {asyncio.Queue: loop}
        self._servers = {}    # (topic, server) -> presence payload
        self._listener = None

    def start(self, ready_timeout=10.0):
        """Start listening; True once the queue is bound (False: the
        broker is unreachable so far, and it keeps trying). Raises the
        TransportError of a refused login at once."""
        self._listener = get_notification_listener(
            self._transport, [Target(topic='batch.*'),
                              Target(topic='server.*')], [self])
        self._listener.start_thread()
        return self._listener.wait_ready(ready_timeout)

    def stop(self):
        if self._listener is not None:
            self._listener.stop()
            self._listener.wait(5)

    def problem(self):
        """None while listening; else why events do not arrive."""
        if self._listener is None:
            return 'not listening'
        return self._listener.problem()

    # -- the notification endpoint (listener thread) ----------------------

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if not isinstance(payload, dict):
            return
        if event_type in SERVER_EVENTS:
            self._presence(event_type, payload)
            return
        batch_id = payload.get('batch_id')
        with self._lock:
            pages = list(self._pages.get(batch_id, {}).items())
        for queue, loop in pages:
            try:
                loop.call_soon_threadsafe(_offer, queue,
                                          (event_type, payload))
            except RuntimeError:  # that page's loop is closed
                pass

    def _presence(self, event_type, payload):
        topic = payload.get('topic')
        server = payload.get('server') or payload.get('host')  # unnamed
        if not isinstance(topic, str) or not isinstance(server, str):
            return
        seen = dict(payload, server=server, received_at=time.time(),
                    stopped=event_type == 'server.stopped')
        with self._lock:
            self._servers[topic, server] = seen

    # -- pages (the event loop) -------------------------------------------

    def subscribe(self, batch_id):
        """An asyncio queue of ``(event_type, payload)`` of ``batch_id``,
        for the running event loop; ``unsubscribe`` it when done."""
        queue = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._pages.setdefault(batch_id, {})[queue] = \
                asyncio.get_running_loop()
        return queue

    def unsubscribe(self, batch_id, queue):
        with self._lock:
            pages = self._pages.get(batch_id, {})
            pages.pop(queue, None)
            if not pages:
                self._pages.pop(batch_id, None)

    def servers(self, silent_after, now=None):
        """Every server heard of, by topic then name: its last
        announcement plus ``status``: ``alive``, ``silent`` (nothing for
        ``silent_after`` seconds) or ``stopped``."""
        now = time.time() if now is None else now
        with self._lock:
            seen = [dict(s) for s in self._servers.values()]
        for server in seen:
            age = now - server['received_at']
            server['age'] = age
            server['status'] = 'stopped' if server['stopped'] else (
                'silent' if age > silent_after else 'alive')
        return sorted(seen, key=lambda s: (s['topic'], s['server']))


def _offer(queue, event):
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        pass  # the page reads its totals from the conductor anyway
