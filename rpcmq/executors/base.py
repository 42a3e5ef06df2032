"""The executor interface."""

import logging

__all__ = ['Executor', 'run_logged']

LOG = logging.getLogger('rpcmq.executors')


def run_logged(fn, args):
    """Run ``fn(*args)``; log (with traceback) whatever escapes it."""
    try:
        fn(*args)
    except Exception:
        LOG.exception('unhandled error in %s', getattr(fn, '__qualname__',
                                                       fn))


class Executor:
    """Runs callables on up to ``size`` workers."""

    #: The kind, as ``[DEFAULT] executor`` names it (its entry point).
    name = None

    def __init__(self, size):
        self.size = size

    def submit(self, fn, *args):
        """Run ``fn(*args)`` on a worker; never blocks (work beyond
        ``size`` waits for a free worker)."""
        raise NotImplementedError

    def shutdown(self, timeout=None):
        """Wait up to ``timeout`` seconds for submitted work; True if done."""
        raise NotImplementedError

    def unfinished(self):
        """Jobs submitted and not yet returned (running or waiting)."""
        raise NotImplementedError
