"""The ``file`` store: objects are files under ``[file_store] root``.

Writes are atomic: the data goes to a temporary file in the target
directory, is fsynced, then ``os.replace``-d over the key, so readers see
the old object or the new one, never a part. ``etag`` is the hex MD5 of
the content (as OSS reports for a single PUT, lowercase).
"""

import hashlib
import io
import logging
import os
import pathlib
import tempfile
from urllib.parse import quote

from rpcmq.storage import base, errors

__all__ = ['FileStore']

LOG = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_TMP_PREFIX = '.rpcmq-tmp-'


class FileStore(base.Store):
    """A local directory as object store (the embedded default)."""

    name = 'file'

    def __init__(self, conf):
        super().__init__(conf)
        self.root = os.path.abspath(conf.file_store.root)
        self.base_url = conf.file_store.base_url or ''
        os.makedirs(self.root, exist_ok=True)
        self._real_root = os.path.realpath(self.root)

    def __repr__(self):
        return f'<FileStore root={self.root}>'

    def validate_key(self, key):
        """Shared rules plus: no ``.``/``..``/empty segment, no backslash
        and no control character, so a key never leaves the root."""
        base.validate_key(key)
        if '\\' in key:
            raise errors.InvalidKey(key=key, reason='the key contains a '
                                    'backslash; separate parts with "/"')
        if any(ord(c) < 0x20 or c == '\x7f' for c in key):
            raise errors.InvalidKey(key=key, reason='the key contains a '
                                    'control character')
        for part in key.split('/'):
            if part in ('', '.', '..'):
                raise errors.InvalidKey(
                    key=key, reason='the key has an empty, "." or ".." '
                    'path segment and could escape the store root')
            if part.startswith(_TMP_PREFIX):
                raise errors.InvalidKey(key=key, reason='segments starting '
                                        f'with {_TMP_PREFIX!r} are reserved')
        return key

    def _path(self, key):
        self.validate_key(key)
        path = os.path.join(self.root, *key.split('/'))
        # Defence in depth: a symlinked directory inside root must not lead
        # outside of it either.
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(
                self._real_root + os.sep):
            raise errors.InvalidKey(key=key, reason='the key resolves '
                                    'outside the store root')
        return path

    def _url(self, key, path):
        if self.base_url:
            return self.base_url.rstrip('/') + '/' + quote(key, safe='/')
        return pathlib.Path(path).as_uri()

    def put_file(self, key, path):
        try:
            with open(path, 'rb') as src:
                return self._write(key, src, path)
        except OSError as e:
            raise errors.StorageError(
                reason=f'cannot read source file {path} for key {key!r}: '
                       f'{e.strerror or e}', key=key, path=path) from None

    def put_bytes(self, key, data):
        return self._write(key, io.BytesIO(data), None)

    def _write(self, key, src, path):
        """Copy the open binary file ``src`` (read from ``path``, if a
        file) to the key's file, atomically and synced."""
        dest = self._path(key)
        directory = os.path.dirname(dest)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise errors.StorageError(
                reason=f'cannot create directory {directory} for key '
                       f'{key!r}: {e.strerror or e}', key=key) from None
        self._path(key)  # re-check now that the directories exist
        md5, size, tmp = hashlib.md5(), 0, None
        action = f'write {dest}'
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
            with os.fdopen(fd, 'wb') as out:
                while True:
                    action = f'read source file {path}'
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    action = f'write {dest}'
                    md5.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            action = f'write {dest}'
            os.replace(tmp, dest)
            tmp = None
            _fsync_dir(directory)
        except OSError as e:
            raise errors.StorageError(
                reason=f'cannot {action} for key {key!r}: {e.strerror or e}',
                key=key, path=path) from None
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)
        LOG.debug('stored %s (%d bytes) at %s', key, size, dest)
        return {'key': key, 'size': size, 'etag': md5.hexdigest(),
                'url': self._url(key, dest)}

    def exists(self, key):
        return os.path.isfile(self._path(key))

    def delete(self, key):
        try:
            os.remove(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise errors.StorageError(reason=f'cannot delete key {key!r}: '
                                             f'{e.strerror or e}',
                                      key=key) from None

    def get_bytes(self, key):
        with self.open(key) as f:
            return f.read()

    def open(self, key):
        """The stored file opened for binary reading (not loaded)."""
        path = self._path(key)
        try:
            return open(path, 'rb')
        except (FileNotFoundError, IsADirectoryError):
            raise errors.NoSuchObject(key=key, store=self.name) from None


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
