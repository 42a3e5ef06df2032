"""The executor interface."""

__all__ = ['Executor']


class Executor:
    """Runs callables on ``size`` workers."""

    def __init__(self, size):
        self.size = size

    def submit(self, fn, *args):
        """Run ``fn(*args)`` on a worker; block while all are busy."""
        raise NotImplementedError

    def shutdown(self, timeout=None):
        """Wait up to ``timeout`` seconds for running work; True if done."""
        raise NotImplementedError
