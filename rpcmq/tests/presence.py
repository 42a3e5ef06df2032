"""What the presence tests (unit on memory://, functional on RabbitMQ)
listen with: a notification endpoint keeping ``server.*`` events."""

import threading

__all__ = ['Seen']


class Seen:
    """Keeps every presence event it gets, or those of ``host`` only."""

    def __init__(self, host=None):
        self.host = host
        self.events = []  # (event_type, payload, publisher_id)
        self._changed = threading.Condition()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if self.host is not None and payload.get('host') != self.host:
            return
        with self._changed:
            self.events.append((event_type, payload, publisher_id))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=10, what='an event'):
        """The first event ``(type, payload, publisher)`` matching."""
        def found():
            return next((e for e in self.events if predicate(*e)), None)
        with self._changed:
            event = self._changed.wait_for(found, timeout)
        assert event, 'no %s within %ss: %s' % (what, timeout, self.events)
        return event

    def types(self):
        with self._changed:
            return [t for t, _, _ in self.events]
