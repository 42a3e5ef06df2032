"""The spool: downloaded images waiting on local disk to be stored.

Each entry is ``<spool_id>.img`` (the image) and ``<spool_id>.json`` (its
metadata: URL, format, hashes...), so ``store()`` works after a restart.
A spool id is 32 lower-case hex digits; anything else is refused before a
path is built, so an id cannot point outside the directory. Entries older
than ``ttl`` seconds are gone: :meth:`get` refuses them and :meth:`sweep`
(run at most every ``sweep_interval`` seconds by :meth:`maybe_sweep`)
deletes them, with any ``.part-*`` download left by a crash.
"""

import json
import os
import re
import tempfile
import time
import uuid

from rpcmq.fetch.errors import SpoolNotFound

__all__ = ['Spool']

_ID = re.compile(r'[0-9a-f]{32}\Z')
_SWEPT = re.compile(r'([0-9a-f]{32}\.(img|json)|\.part-.*|\.meta-.*)\Z')


class Spool:
    """A spool directory; ``server`` names this server in errors."""

    def __init__(self, directory, ttl, server=None, sweep_interval=None):
        self.directory = directory
        self.ttl = ttl
        self.server = server
        self.sweep_interval = (min(ttl, 60) if sweep_interval is None
                               else sweep_interval)
        self._last_sweep = 0.0

    @staticmethod
    def new_id():
        return uuid.uuid4().hex

    def data_name(self, spool_id):
        """File name of the image of ``spool_id`` (validated)."""
        self._check_id(spool_id)
        return spool_id + '.img'

    def data_path(self, spool_id):
        """Path of the image of ``spool_id`` (validated)."""
        return self._path(spool_id, '.img')

    def write_data(self, spool_id, data):
        """Write the image of ``spool_id`` (bytes), whole or not at all."""
        self._replace(self._path(spool_id, '.img'), '.part-', data)

    def put(self, spool_id, meta):
        """Record ``meta`` for the image already at ``data_name(spool_id)``."""
        self._replace(self._path(spool_id, '.json'), '.meta-',
                      json.dumps(meta).encode('utf-8'))

    def _replace(self, path, prefix, data):
        """Put ``data`` at ``path`` through a temp file named ``prefix*``
        (swept if a crash leaves it): readers see all of it or nothing."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=prefix)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise

    def get(self, spool_id, now=None):
        """``(image path, meta)`` of a live entry.

        :raises SpoolNotFound: invalid id, no such entry, or expired.
        """
        meta_path = self._path(spool_id, '.json')
        data_path = self._path(spool_id, '.img')
        try:
            age = (now or time.time()) - os.stat(meta_path).st_mtime
            with open(meta_path, encoding='utf-8') as f:
                meta = json.load(f)
        except (FileNotFoundError, ValueError):
            raise self.not_found(spool_id) from None
        if age > self.ttl:
            self.remove(spool_id)
            raise self.not_found(spool_id, 'expired after spool_ttl (%ss)'
                                % self.ttl)
        if not os.path.exists(data_path):
            raise self.not_found(spool_id)
        return data_path, meta

    def remove(self, spool_id):
        """Delete an entry; a missing one is fine."""
        for suffix in ('.img', '.json'):
            _unlink(self._path(spool_id, suffix))

    def sweep(self, now=None):
        """Delete spool files older than ``ttl``; return how many."""
        limit = (now or time.time()) - self.ttl
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not _SWEPT.match(entry.name):
                continue
            try:
                if entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def maybe_sweep(self, now=None):
        """Sweep if ``sweep_interval`` passed since the last sweep."""
        now = now or time.time()
        if abs(now - self._last_sweep) >= self.sweep_interval:
            self._last_sweep = now
            return self.sweep(now)
        return 0

    def _check_id(self, spool_id):
        if not isinstance(spool_id, str) or not _ID.match(spool_id):
            raise self.not_found(spool_id, 'not a valid spool id: expected '
                                          '32 hex digits')

    def _path(self, spool_id, suffix):
        self._check_id(spool_id)
        return os.path.join(self.directory, spool_id + suffix)

    def not_found(self, spool_id, reason='no such spooled file'):
        """The :class:`SpoolNotFound` error for ``spool_id``."""
        if not isinstance(spool_id, (str, int, float, type(None))):
            spool_id = repr(spool_id)
        if isinstance(spool_id, str):
            spool_id = spool_id[:100]
        return SpoolNotFound(spool_id=spool_id, server=self.server,
                             reason=reason)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
