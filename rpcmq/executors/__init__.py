"""Executors run endpoint methods off the listener thread.

Plugins of the ``rpcmq.executors`` stevedore group: ``eventlet`` (green
threads) and ``threading`` (a thread pool). ``submit`` never blocks: the
thread that reads the broker's socket calls it, and must go on reading
(heartbeats, acks, other replies) however long endpoints run. How much
work can arrive is bounded upstream: a server asks the broker for at most
``size`` unacked messages (prefetch), so the rest wait in the broker.

Whatever escapes a submitted callable is logged with its traceback.
"""

from stevedore import driver
from stevedore.exception import NoMatches

from rpcmq.exceptions import ConfigError

__all__ = ['get_executor']

NAMESPACE = 'rpcmq.executors'


def get_executor(name, size):
    try:
        return driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                    invoke_args=(size,)).driver
    except NoMatches:
        raise ConfigError(reason='unknown executor %r; use eventlet or '
                                 'threading' % name) from None
