"""Executors run endpoint methods off the listener thread.

Plugins of the ``rpcmq.executors`` stevedore group: ``eventlet`` (green
threads) and ``threading`` (a thread pool). ``submit`` blocks while every
worker is busy, so a busy server stops taking messages and the broker gives
them to other servers of the topic.
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
