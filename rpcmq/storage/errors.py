"""Errors of the object stores.

Every field is a JSON-able keyword argument kept on ``err.kwargs`` so the
error crosses the wire and is rebuilt on the caller as ``cls(message,
**kwargs)``. No message or field ever carries an access key secret.
"""

from rpcmq.exceptions import RpcmqError

__all__ = [
    'InvalidKey',
    'NoSuchObject',
    'StorageDenied',
    'StorageError',
    'StorageUnavailable',
]


class StorageError(RpcmqError):
    """Any failure of a store; the base of the errors below."""

    msg_fmt = 'object store failure: %(reason)s'


class InvalidKey(StorageError, ValueError):
    """The object key is empty, too long or would escape the store."""

    msg_fmt = ('invalid object key %(key)r: %(reason)s; use a relative '
               'name such as "images/2024/cat.jpg"')


class StorageUnavailable(StorageError):
    """The store could not be reached, or kept failing, after retries."""

    msg_fmt = ('%(store)s store at %(endpoint)s is unavailable: %(op)s of '
               '%(key)r failed after %(attempts)d attempt(s): %(reason)s. '
               'Check that the endpoint is reachable and healthy.')


class StorageDenied(StorageError):
    """The store refused the credentials (HTTP 403); never retried."""

    msg_fmt = ('%(store)s store at %(endpoint)s denied %(op)s of %(key)r in '
               'bucket %(bucket)r: %(code)s (HTTP %(status)s). Check '
               '[oss] access_key_id %(access_key_id)r, its access key '
               'secret, auth_version/region and the bucket policy.')


class NoSuchObject(StorageError):
    """``get_bytes``/``open`` of a key the store does not hold."""

    msg_fmt = 'no object %(key)r in the %(store)s store'
