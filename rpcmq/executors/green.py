"""The ``eventlet`` executor: up to ``size`` long-lived green threads.

Needs ``eventlet.monkey_patch()`` before anything else is imported (the
rpcmq daemons do this first thing): otherwise the listener blocks in real
socket reads and green threads never run.

Workers are started as work arrives and then kept, waiting on a queue:
a green thread per message (``GreenPool.spawn_n``) would cost a new
greenlet and a fresh interpreter frame stack each time.
"""

import logging

import eventlet
from eventlet import patcher, queue, semaphore

from rpcmq.exceptions import ConfigError
from rpcmq.executors.base import Executor

__all__ = ['EventletExecutor']

LOG = logging.getLogger(__name__)

_STOP = object()


class EventletExecutor(Executor):

    def __init__(self, size):
        if not patcher.is_monkey_patched('socket') or \
                not patcher.is_monkey_patched('thread'):
            raise ConfigError(reason='the eventlet executor needs '
                                     'eventlet.monkey_patch() at the start '
                                     'of the program; use the threading '
                                     'executor otherwise')
        super().__init__(size)
        self._slots = semaphore.Semaphore(size)  # work queued or running
        self._jobs = queue.LightQueue()
        self._workers = 0
        self._idle = 0   # workers waiting for a job nobody has claimed

    def submit(self, fn, *args):
        self._slots.acquire()  # blocks while `size` jobs are unfinished
        if self._idle:
            self._idle -= 1     # that worker will take this job
        else:
            self._workers += 1  # all busy, and fewer than `size` exist
            eventlet.spawn_n(self._work)
        self._jobs.put((fn, args))

    def _work(self):
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, args = job
            del job  # keep no message alive while idle
            try:
                fn(*args)
            except Exception:
                LOG.exception('unhandled error in %r', fn)
            except BaseException:  # GreenletExit, a stray Timeout
                self._workers -= 1  # this worker ends here
                self._slots.release()
                raise
            finally:
                del fn, args
            self._idle += 1
            self._slots.release()

    def shutdown(self, timeout=None):
        taken = 0
        with eventlet.Timeout(timeout, False):
            while taken < self.size:  # every slot free: nothing unfinished
                self._slots.acquire()
                taken += 1
        for _ in range(taken):
            self._slots.release()
        if taken == self.size:
            for _ in range(self._workers):
                self._jobs.put(_STOP)
            self._workers = self._idle = 0
            return True
        return False
