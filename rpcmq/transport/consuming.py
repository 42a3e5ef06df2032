"""Running a kombu ConsumerMixin in a thread that stop() can end."""

import logging
import threading

__all__ = ['Stopped', 'start_thread']

LOG = logging.getLogger(__name__)

DRAIN_INTERVAL = 0.25


class Stopped(Exception):
    """Raised from a reconnect errback to leave kombu's retry loop."""


def _run(consumer):
    try:
        consumer.run(safety_interval=DRAIN_INTERVAL)
    except Stopped:
        pass
    except Exception:
        LOG.exception('%s stopped on an unexpected error', consumer)


def start_thread(consumer, name):
    """Run ``consumer`` (a ConsumerMixin) in a daemon thread."""
    thread = threading.Thread(target=_run, args=(consumer,), name=name,
                              daemon=True)
    thread.start()
    return thread
