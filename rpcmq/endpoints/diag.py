"""The ``diag`` endpoint: ping, echo, sleep, fail and a cast counter.

For checking a deployment end to end (``rpcmq call diag ping``) and for
benchmarks; it touches nothing outside the process.
"""

import os
import socket
import threading
import time

from rpcmq.target import Target

__all__ = ['DiagEndpoint']

_MAX_SLEEP = 300.0


class DiagEndpoint:
    target = Target(namespace=None, version='1.0')

    def __init__(self, conf=None):
        self.host = getattr(conf, 'host', None)
        self._count = 0
        self._lock = threading.Lock()

    def ping(self, ctxt):
        """Who answers: host, pid, and whether it runs on green threads."""
        return {'host': self.host, 'time': time.time(), 'pid': os.getpid(),
                'green': socket.socket.__module__.startswith('eventlet')}

    def echo(self, ctxt, x=None):
        return x

    def sleep(self, ctxt, seconds):
        time.sleep(min(float(seconds), _MAX_SLEEP))
        return self.host

    def fail(self, ctxt, message='requested failure'):
        raise RuntimeError(message)

    def bump(self, ctxt, n=1):
        with self._lock:
            self._count += int(n)

    def count(self, ctxt):
        return self._count
