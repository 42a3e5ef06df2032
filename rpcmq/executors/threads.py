"""The ``threading`` executor: a bounded pool of OS threads."""

import threading
from concurrent import futures

from rpcmq.executors.base import Executor, run_logged

__all__ = ['ThreadingExecutor']


class ThreadingExecutor(Executor):

    name = 'threading'

    def __init__(self, size):
        super().__init__(size)
        self._pool = futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix='rpcmq-worker')
        self._running = set()
        self._lock = threading.Lock()

    def submit(self, fn, *args):
        future = self._pool.submit(run_logged, fn, args)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._done)

    def unfinished(self):
        return len(self._running)

    def _done(self, future):
        with self._lock:
            self._running.discard(future)

    def shutdown(self, timeout=None):
        with self._lock:
            running = list(self._running)
        done, not_done = futures.wait(running, timeout=timeout)
        self._pool.shutdown(wait=False)
        return not not_done
