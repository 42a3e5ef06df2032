"""Object stores where rpcmq puts transferred files.

``get_store(conf)`` loads the driver named by ``[DEFAULT] store`` from the
``rpcmq.storage`` entry point group: ``file`` (a local directory, the
default) or ``oss`` (Alibaba Cloud OSS through oss2). See
:class:`rpcmq.storage.base.Store` for the interface.
"""

from stevedore import driver
from stevedore import exception as stevedore_exc

from rpcmq.exceptions import ConfigError
from rpcmq.storage.base import Store
from rpcmq.storage.errors import (
    InvalidKey,
    NoSuchObject,
    StorageDenied,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    'NAMESPACE',
    'InvalidKey',
    'NoSuchObject',
    'StorageDenied',
    'StorageError',
    'StorageUnavailable',
    'Store',
    'available_stores',
    'get_store',
]

NAMESPACE = 'rpcmq.storage'


def available_stores():
    """Names of the installed store drivers, sorted."""
    from importlib.metadata import entry_points
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def get_store(conf):
    """Build the store named by ``conf.store`` with ``conf``.

    Raises :class:`rpcmq.exceptions.ConfigError` naming the valid choices
    when no driver has that name.
    """
    name = conf.store
    try:
        mgr = driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                   invoke_args=(conf,))
    except stevedore_exc.NoMatches:
        choices = ', '.join(available_stores()) or 'none installed'
        raise ConfigError(
            reason=f'[DEFAULT] store = {name!r} names no object store '
                   f'driver; valid choices: {choices}',
            option='store', value=name) from None
    return mgr.driver
