"""Thumbnails of stored images, for the batch page.

A store that can sign URLs (OSS) is asked for one and the browser fetches
the object there. Otherwise (the file store) the dashboard reads the
stored object, lets Pillow shrink it (``draft`` first: a JPEG is decoded
at a fraction of its size) and answers a small JPEG or PNG that it made
itself; the stored bytes never reach the browser as they are. Recent
thumbnails are kept in memory, by key and etag.
"""

import functools
import io
import logging

from PIL import Image, UnidentifiedImageError

from rpcmq.storage import errors as store_errors

__all__ = ['Thumbnails', 'NoPreview']

LOG = logging.getLogger(__name__)
#: Thumbnails kept in memory (a few KB each).
CACHE_ENTRIES = 512
#: Stored objects larger than this are not read for a thumbnail.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
#: How long a signed URL stays valid, in seconds.
SIGNED_FOR = 300


class NoPreview(Exception):
    """This item has no thumbnail; the message says why."""


class Thumbnails:

    def __init__(self, store, size):
        self.store = store
        self.size = size
        # Thread-safe; a NoPreview is not kept (the object may appear).
        self._cached = functools.lru_cache(CACHE_ENTRIES)(self._make)

    def signed_url(self, key):
        """Where the browser may fetch ``key`` itself, or None."""
        if self.store is None:
            return None
        return self.store.signed_url(key, SIGNED_FOR)

    def render(self, key, etag=None):
        """``(bytes, content type)`` of the thumbnail of ``key``; raises
        NoPreview. ``etag`` tells a stored object replaced under the same
        key from the one cached."""
        if self.store is None:
            raise NoPreview('no store is configured here ([DEFAULT] store)')
        return self._cached(key, etag)

    def _make(self, key, etag):
        try:
            with self.store.open(key) as source:
                data = source.read(MAX_SOURCE_BYTES + 1)
        except (store_errors.StorageError, OSError) as exc:
            raise NoPreview('the stored object cannot be read: %s'
                            % exc) from None
        if len(data) > MAX_SOURCE_BYTES:
            raise NoPreview('the stored object is larger than %d MB'
                            % (MAX_SOURCE_BYTES >> 20))
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft('RGB', (self.size, self.size))
                img.thumbnail((self.size, self.size))
                keep_alpha = img.mode in ('RGBA', 'LA', 'P')
                img = img.convert('RGBA' if keep_alpha else 'RGB')
                out = io.BytesIO()
                if keep_alpha:
                    img.save(out, 'PNG', optimize=True)
                    return out.getvalue(), 'image/png'
                img.save(out, 'JPEG', quality=80)
                return out.getvalue(), 'image/jpeg'
        except (UnidentifiedImageError, OSError, ValueError,
                Image.DecompressionBombError) as exc:
            LOG.info('no thumbnail of %s: %s', key, exc)
            raise NoPreview('the stored object is not an image Pillow '
                            'reads: %s' % exc) from None
