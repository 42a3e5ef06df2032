"""The ``eventlet`` executor: up to ``size`` long-lived green threads.

Needs ``eventlet.monkey_patch()`` before anything else is imported (the
rpcmq daemons do this first thing): otherwise the listener blocks in real
socket reads and green threads never run.

Workers are started as work arrives and then kept, waiting on a queue:
a green thread per message (``GreenPool.spawn_n``) would cost a new
greenlet and a fresh interpreter frame stack each time. A new worker is
started whenever there are more unfinished jobs than workers, up to
``size``; beyond that jobs wait in the queue (``submit`` never blocks).
"""

import threading

import eventlet
from eventlet import patcher, queue

from rpcmq.exceptions import ConfigError
from rpcmq.executors.base import Executor, run_logged

__all__ = ['EventletExecutor']

_STOP = object()


class EventletExecutor(Executor):

    name = 'eventlet'

    def __init__(self, size):
        if not patcher.is_monkey_patched('socket') or \
                not patcher.is_monkey_patched('thread'):
            raise ConfigError(reason='the eventlet executor needs '
                                     'eventlet.monkey_patch() at the start '
                                     'of the program; use the threading '
                                     'executor otherwise')
        super().__init__(size)
        self._jobs = queue.LightQueue()
        self._changed = threading.Condition()  # green under monkey_patch
        self._workers = 0
        self._unfinished = 0  # submitted, not yet returned

    def submit(self, fn, *args):
        with self._changed:
            self._unfinished += 1
            spawn = self._unfinished > self._workers and \
                self._workers < self.size
            if spawn:
                self._workers += 1
        self._jobs.put((fn, args))
        if spawn:
            eventlet.spawn_n(self._work)

    def unfinished(self):
        return self._unfinished

    def _work(self):
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                fn, args = job
                del job  # keep no message alive while idle
                try:
                    run_logged(fn, args)
                finally:
                    del fn, args
                    self._finished()
        finally:
            with self._changed:
                self._workers -= 1

    def _finished(self):
        with self._changed:
            self._unfinished -= 1
            if not self._unfinished:
                self._changed.notify_all()

    def shutdown(self, timeout=None):
        with self._changed:
            done = self._changed.wait_for(lambda: not self._unfinished,
                                          timeout)
            workers = self._workers
        if done:
            for _ in range(workers):
                self._jobs.put(_STOP)
        return done
