"""Eventlet monkey-patching for the daemons, or OS threads if configured.

A daemon calls ``monkey_patch()`` before any other import, as eventlet
requires. Once its config is read, ``os_threads_if_configured(conf)``
re-executes a daemon configured with ``executor = threading`` (same pid,
same command line) with ``RPCMQ_OS_THREADS=1`` in its environment, which
skips the patching: its listener and workers are then real OS threads,
not green threads posing as them.
"""

import os
import sys
import warnings

__all__ = ['ENV', 'monkey_patch', 'os_threads_if_configured']

ENV = 'RPCMQ_OS_THREADS'


def monkey_patch():
    """Patch the standard library for eventlet unless OS threads are due."""
    if os.environ.get(ENV) == '1':
        return False
    # rpcmq chose eventlet for the daemon; its message starts with a
    # newline, which '.*' does not match.
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    import eventlet
    eventlet.monkey_patch()
    return True


def os_threads_if_configured(conf):
    """Re-exec without eventlet when ``conf.executor`` is ``threading``."""
    if conf.executor != 'threading' or os.environ.get(ENV) == '1':
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, **{ENV: '1'}))
