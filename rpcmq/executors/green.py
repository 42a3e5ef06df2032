"""The ``eventlet`` executor: a pool of green threads.

Needs ``eventlet.monkey_patch()`` before anything else is imported (the
rpcmq daemons do this first thing): otherwise the listener blocks in real
socket reads and green threads never run.
"""

import eventlet
from eventlet import greenpool, patcher

from rpcmq.exceptions import ConfigError
from rpcmq.executors.base import Executor

__all__ = ['EventletExecutor']


class EventletExecutor(Executor):

    def __init__(self, size):
        if not patcher.is_monkey_patched('socket') or \
                not patcher.is_monkey_patched('thread'):
            raise ConfigError(reason='the eventlet executor needs '
                                     'eventlet.monkey_patch() at the start '
                                     'of the program; use the threading '
                                     'executor otherwise')
        super().__init__(size)
        self._pool = greenpool.GreenPool(size)

    def submit(self, fn, *args):
        self._pool.spawn_n(fn, *args)

    def shutdown(self, timeout=None):
        with eventlet.Timeout(timeout, False):
            self._pool.waitall()
            return True
        return False
