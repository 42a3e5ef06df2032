"""The interface every object store driver implements."""

import io
import os
import tempfile

from rpcmq.storage import errors

__all__ = ['MAX_KEY_BYTES', 'Store', 'validate_key']

#: Longest key in UTF-8 bytes (the OSS limit).
MAX_KEY_BYTES = 1023


def validate_key(key):
    """Check the rules every store shares; return the key unchanged.

    A key is a non-empty str of at most 1023 UTF-8 bytes, without NUL and
    without a leading ``/``. Raises :class:`InvalidKey` naming the key.
    """
    if not isinstance(key, str):
        raise errors.InvalidKey(key=repr(key),
                                reason='the key must be a str, not '
                                       f'{type(key).__name__}')
    if not key:
        raise errors.InvalidKey(key=key, reason='the key is empty')
    if '\x00' in key:
        raise errors.InvalidKey(key=key, reason='the key contains NUL')
    if key.startswith('/'):
        raise errors.InvalidKey(key=key,
                                reason='the key must not start with "/"')
    try:
        size = len(key.encode('utf-8'))
    except UnicodeEncodeError:
        raise errors.InvalidKey(key=key, reason='the key is not valid '
                                'UTF-8 text') from None
    if size > MAX_KEY_BYTES:
        raise errors.InvalidKey(key=key, reason=f'the key is {size} bytes '
                                f'long, the limit is {MAX_KEY_BYTES}')
    return key


class Store:
    """An object store: put local files under keys, check and delete them.

    Drivers are loaded by name from the ``rpcmq.storage`` entry point group
    (see :func:`rpcmq.storage.get_store`) and built as ``Driver(conf)``.

    Contract:

    * ``put_file(key, path)`` uploads the local file and returns
      ``{'key', 'size', 'etag', 'url'}``; putting a key again overwrites it
      (idempotent), readers never see a partial object.
    * ``streams(size)`` -> bool: whether ``put_stream`` takes an object
      of ``size`` bytes (False unless a driver says otherwise);
      ``put_stream(key, chunks, size)`` uploads the bytes an iterable
      yields, once, with the result of ``put_file``; the object exists
      only if ``chunks`` yields all ``size`` bytes (an iterable that
      raises first leaves nothing stored, and the exception propagates).
    * ``exists(key)`` -> bool; ``delete(key)`` removes the key and is a
      no-op for a missing key.
    * ``get_bytes(key)`` -> bytes and ``open(key)`` -> a readable binary
      file object, for tests and verification (whole object in memory);
      both raise :class:`NoSuchObject` for a missing key.

    Every method raises :class:`InvalidKey` for a bad key and
    :class:`StorageError` subclasses for store failures.
    """

    #: Entry point name of the driver, used in error messages.
    name = 'abstract'

    def __init__(self, conf):
        self.conf = conf

    def validate_key(self, key):
        return validate_key(key)

    def put_file(self, key, path):
        raise NotImplementedError

    def put_bytes(self, key, data):
        """Store ``data`` under ``key``; same result as :meth:`put_file`."""
        fd, path = tempfile.mkstemp(prefix='rpcmq-put-')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            return self.put_file(key, path)
        finally:
            os.unlink(path)

    def streams(self, size):
        return False

    def put_stream(self, key, chunks, size):
        raise NotImplementedError

    def exists(self, key):
        raise NotImplementedError

    def delete(self, key):
        raise NotImplementedError

    def get_bytes(self, key):
        raise NotImplementedError

    def open(self, key):
        return io.BytesIO(self.get_bytes(key))

    def signed_url(self, key, expires=300):
        """A URL a browser may GET ``key`` from for ``expires`` seconds,
        where the store can sign one (OSS); None where it cannot (the
        dashboard then reads the object itself)."""
        return None

    def close(self):
        """Release connections; the store must not be used afterwards."""

    def __repr__(self):
        return f'<{type(self).__name__}>'
