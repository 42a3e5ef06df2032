"""Upload an image while it downloads; the object exists only once the
download is whole and verified.

``transfer`` used to download an image whole, then upload it: for a large
image two long phases in a row, and with many transfers at once all the
downloads, then all the uploads. :class:`OverlappedUpload` watches the
spool file the fetcher writes (it is the fetcher's ``watcher``) and, from
the first bytes on, sends them to the store in one request whose length
is the Content-Length the image server declared. The last byte waits for
:meth:`~OverlappedUpload.finish`, which the endpoint calls only after the
download returned (whole, hashed, verified by Pillow) under the key the
stream was started with. Anything else -- a failed or retried download,
an image of another format than its first bytes announced, a size other
than declared -- cuts the request short: the store never receives a whole
request, so no object is created. The spool keeps its copy as before;
when the streamed upload did not complete, the endpoint uploads that copy
with the store's own retry policy.
"""

import logging
import os
import threading

from rpcmq.fetch import image

__all__ = ['OverlappedUpload']

LOG = logging.getLogger(__name__)

_PIECE = 256 * 1024
_HEAD = 32


class Cut(Exception):
    """The streamed upload was stopped before its last byte."""


class OverlappedUpload:
    """One image's upload, sent while its download is written.

    :param store: a Store whose ``streams(size)`` and ``put_stream`` serve.
    :param key_for: ``key_for(format)`` -> the storage key of an image of
        that Pillow format, or None where the key cannot be known before
        the download ends.
    :param min_bytes: smallest declared size worth overlapping.
    """

    def __init__(self, store, key_for, min_bytes):
        self._store, self._key_for, self._min = store, key_for, min_bytes
        self._cond = threading.Condition()
        self._state = 'idle'  # waiting, sending, verified, off, cut
        self._path = self._fd = self._size = self.key = None
        self._written = 0
        self._thread = self._result = self._error = None

    # -- the fetcher's side (the downloading thread) ----------------------
    def begin(self, path, declared):
        """A download attempt created ``path``, ``declared`` bytes long."""
        with self._cond:
            if (self._state == 'idle' and declared is not None
                    and declared >= max(self._min, 1)
                    and self._store.streams(declared)):
                self._path, self._size = path, declared
                self._state = 'waiting'
            else:  # a second attempt abandons what the first sent
                self._stop()

    def grew(self, written):
        """``written`` bytes of the download are on disk."""
        with self._cond:
            self._written = written
            if self._state == 'sending':
                self._cond.notify()
            elif self._state == 'waiting' and \
                    written >= min(_HEAD, self._size):
                self._start()

    # -- the endpoint's side -----------------------------------------------
    def finish(self, key, size):
        """The download is whole and verified: ``size`` bytes, to be stored
        under ``key``. Send the last byte and return the store's result,
        or None if nothing was stored this way (the caller then uploads
        the spooled file)."""
        with self._cond:
            if self._state != 'sending':
                self._stop()
                return None
            if key != self.key or size != self._size:
                LOG.debug('upload of %r cut: the download is %d bytes for '
                          '%r, %d were declared for %r', self.key, size, key,
                          self._size, self.key)
                self._stop()
                return None
            self._state = 'verified'
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            LOG.warning('uploading %r while it downloaded failed (%s: %s); '
                        'uploading the downloaded file instead', key,
                        type(self._error).__name__, self._error)
            return None
        return self._result

    def abort(self):
        """The download failed, or the caller gave up: store nothing."""
        with self._cond:
            self._stop()

    # -- under the lock ----------------------------------------------------
    def _stop(self):
        if self._state == 'sending':
            self._state = 'cut'
            self._cond.notify()
        elif self._state in ('idle', 'waiting'):
            self._state = 'off'

    def _start(self):
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            self._state = 'off'
            return
        try:
            fmt = image.sniff_format(os.pread(fd, _HEAD, 0))
            key = self._key_for(fmt) if fmt else None
            if key is not None:
                self._store.validate_key(key)
        except Exception as exc:  # a bad key template, key or file: later
            LOG.debug('not uploading while downloading: %s', exc)
            key = None
        if key is None:
            os.close(fd)
            self._state = 'off'
            return
        self._fd, self.key, self._state = fd, key, 'sending'
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='overlap-' + key[:40])
        self._thread.start()

    # -- the upload's thread -----------------------------------------------
    def _run(self):
        try:
            self._result = self._store.put_stream(self.key, self._chunks(),
                                                  self._size)
        except BaseException as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def _chunks(self):
        """The file's bytes as they are written; all but the last until
        :meth:`finish`, and :class:`Cut` if the upload is to be cut."""
        sent, size = 0, self._size
        while sent < size:
            with self._cond:
                while True:
                    if self._state == 'cut':
                        raise Cut('the download failed or differs from '
                                  'what was being uploaded')
                    limit = size if self._state == 'verified' else \
                        min(self._written, size - 1)
                    if limit > sent:
                        break
                    self._cond.wait()
            data = os.pread(self._fd, min(limit - sent, _PIECE), sent)
            if not data:
                raise Cut(f'{self._path} ends at {sent} bytes, short of '
                          f'the {limit} written')
            sent += len(data)
            yield data
