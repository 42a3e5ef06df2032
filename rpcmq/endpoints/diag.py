"""The ``diag`` endpoint: ping, echo, sleep, fail and a cast counter.

For checking a deployment end to end (``rpcmq call diag ping``) and for
benchmarks; it touches nothing outside the process. ``ping`` and ``echo``
answer anyone; ``sleep`` (which holds a worker), ``fail``, ``bump``,
``count`` and ``bumps`` answer only where ``[diag] unsafe_methods`` is on (or
``DiagEndpoint(unsafe=True)`` in a program), for tests and benchmarks.
"""

import functools
import os
import socket
import threading
import time

from rpcmq.exceptions import MethodDisabled
from rpcmq.target import Target

__all__ = ['DiagEndpoint']

_MAX_SLEEP = 300.0


def _unsafe(method):
    """Refuse ``method`` with MethodDisabled unless unsafe methods are on."""
    @functools.wraps(method)
    def guarded(self, ctxt, *args, **kwargs):
        if not self.unsafe:
            raise MethodDisabled(
                method='diag.%s' % method.__name__,
                reason='only ping and echo answer unless [diag] '
                       'unsafe_methods = true (for tests and benchmarks)')
        return method(self, ctxt, *args, **kwargs)
    return guarded


class DiagEndpoint:
    target = Target(namespace=None, version='1.0')

    def __init__(self, conf=None, unsafe=None):
        self.host = getattr(conf, 'host', None)
        if unsafe is None:
            group = getattr(conf, 'diag', None)
            unsafe = bool(group is not None and group.unsafe_methods)
        self.unsafe = unsafe
        self._count = 0
        self._first = self._last = None  # time.time() of the bumps
        self._lock = threading.Lock()

    def ping(self, ctxt):
        """Who answers: host, pid, and whether it runs on green threads."""
        return {'host': self.host, 'time': time.time(), 'pid': os.getpid(),
                'green': socket.socket.__module__.startswith('eventlet')}

    def echo(self, ctxt, x=None):
        return x

    @_unsafe
    def sleep(self, ctxt, seconds):
        time.sleep(min(float(seconds), _MAX_SLEEP))
        return self.host

    @_unsafe
    def fail(self, ctxt, message='requested failure'):
        raise RuntimeError(message)

    @_unsafe
    def bump(self, ctxt, n=1):
        now = time.time()
        with self._lock:
            self._count += int(n)
            if self._first is None:
                self._first = now
            self._last = now

    @_unsafe
    def count(self, ctxt):
        return self._count

    @_unsafe
    def bumps(self, ctxt):
        """The count and when the first and the latest bump ran (Unix
        time): how fast this server ran a backlog of casts."""
        with self._lock:
            return {'count': self._count, 'first': self._first,
                    'last': self._last}
