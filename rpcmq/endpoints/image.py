"""The image endpoint: download image URLs and put them in the store.

``fetch`` downloads into this server's spool and returns a handle;
``store`` uploads a spooled image (send it to the server named in the
handle) and frees the spool; ``transfer`` does both in one call. Both
answer with what was stored and what the content is (sha256, format,
size), so a caller holding only a ``spool_id`` (say, one that restarted
between the two calls) learns everything about the object. Failures
are the typed errors of :mod:`rpcmq.fetch.errors` (download) and
:mod:`rpcmq.storage.errors` (upload), rebuilt as such on the caller.
"""

import contextlib
import logging
import os
import re
import string
import threading
import urllib.parse

from rpcmq.endpoints.overlap import OverlappedUpload
from rpcmq.exceptions import ConfigError, RpcmqError
from rpcmq.fetch import image
from rpcmq.fetch.download import Fetcher, url_sha1
from rpcmq.fetch.spool import Spool
from rpcmq.observe import metrics
from rpcmq.target import Target

__all__ = ['ImageEndpoint']

LOG = logging.getLogger(__name__)

_HANDLE_FIELDS = ('server', 'spool_id', 'size', 'url', 'url_sha1', 'sha256',
                  'format', 'width', 'height', 'content_type')
_CONTENT_FIELDS = ('sha256', 'format', 'width', 'height', 'content_type')


class ImageEndpoint:
    """Endpoint ``image`` 1.2.

    1.1: ``store`` takes ``name`` and returns the content fields.
    1.2: ``transfer`` takes ``name`` and ``keep_spool``.

    :param conf: a ConfigOpts with every rpcmq option registered.
    :param store: a ``rpcmq.storage`` Store; by default built on first use
        with ``rpcmq.storage.get_store(conf)``.
    :param fetcher: a :class:`rpcmq.fetch.Fetcher`; by default built from
        the ``[image]`` options.
    """

    target = Target(namespace='image', version='1.2')

    def __init__(self, conf, store=None, fetcher=None):
        self.conf = conf
        self.spool = Spool(conf.image.spool_dir, conf.image.spool_ttl,
                           server=conf.host)
        self.fetcher = fetcher or Fetcher.from_conf(conf)
        self._store = store
        self._store_lock = threading.Lock()

    @property
    def store_driver(self):
        """The Store, created on first use (errors are the store's own)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    from rpcmq import storage
                    self._store = storage.get_store(self.conf)
        return self._store

    def fetch(self, ctxt, url):
        """Download ``url`` into this server's spool.

        :returns: handle ``{server, spool_id, size, url, url_sha1, sha256,
            format, width, height, content_type}``; pass ``spool_id`` to
            :meth:`store` on ``server`` within ``spool_ttl`` seconds.
        """
        self.spool.maybe_sweep()
        return self._fetch(url)[0]

    def store(self, ctxt, spool_id, key=None, name=None):
        """Upload a spooled image under ``key``; else under ``name`` plus the
        image's extension when ``name`` has none (``cats/tom`` becomes
        ``cats/tom.png``); else under ``key_template``.

        :returns: ``{key, size, etag, url, source_url, sha256, format, width,
            height, content_type}``: ``url`` is the stored object's,
            ``source_url`` the one it was downloaded from (1.1; 1.0 gave
            the first four).
        :raises SpoolNotFound: unknown, invalid or expired ``spool_id``.
        """
        self.spool.maybe_sweep()
        path, meta = self.spool.get(spool_id)
        if key is None and name:
            key = name_key(name, meta['format'])
        try:
            stored = self._put(path, meta, key)
        except Exception:
            if not os.path.exists(path):
                # Stored or swept by a concurrent call meanwhile.
                raise self.spool.not_found(spool_id) from None
            raise
        self.spool.remove(spool_id)
        result = {f: meta.get(f) for f in _CONTENT_FIELDS}
        result['source_url'] = meta['url']
        result.update(stored)
        return result

    def transfer(self, ctxt, url, key=None, name=None, keep_spool=False):
        """Download ``url`` and upload it in one call (key as :meth:`store`
        names it).

        :returns: the :meth:`store` result ``{key, size, etag, url}`` plus
            the fetch handle fields, except that the downloaded URL is
            ``source_url`` (``url`` is the stored object's) and there is no
            ``spool_id``. A large image is uploaded while it downloads
            (``[image] overlap_min_bytes``, :mod:`.overlap`); the object
            still exists only once the download is whole and verified.
        :param keep_spool: if the upload fails with an rpcmq error, keep
            the downloaded copy and name it in the error (``server``,
            ``spool_id``), so :meth:`store` on this server can retry the
            upload without downloading again (1.2). Otherwise, and after
            success, the copy is freed.
        """
        self.spool.maybe_sweep()
        overlap = self._overlap(url, key, name)
        try:
            return self._transfer(url, key, name, keep_spool, overlap)
        finally:
            if overlap is not None:
                overlap.abort()  # a no-op once finished

    def _transfer(self, url, key, name, keep_spool, overlap):
        # A small image stays in memory; the spool gets the image and its
        # handle only if store() may need them.
        handle, data = self._fetch(
            url, overlap, record=False,
            memory_max=self.conf.image.memory_max_bytes)
        path = self.spool.data_path(handle['spool_id'])
        if key is None and name:
            key = name_key(name, handle['format'])
        try:
            stored = self._put(path, handle, key, overlap, data)
        except RpcmqError as exc:
            if not keep_spool or not self._keep(handle, data):
                self.spool.remove(handle['spool_id'])
                raise
            exc.kwargs.update(server=handle['server'],
                              spool_id=handle['spool_id'])
            raise
        except BaseException:
            self.spool.remove(handle['spool_id'])
            raise
        if data is None:
            self.spool.remove(handle['spool_id'])
        result = dict(handle, source_url=handle['url'])
        del result['spool_id']
        result.update(stored)
        return result

    def default_key(self, meta):
        """Storage key of ``meta`` (a fetch handle) from ``key_template``."""
        template = self.conf.image.key_template
        fields = {
            'url_sha1': meta['url_sha1'],
            'ext': image.extension(meta['format']),
            'format': meta['format'],
            'sha256': meta['sha256'],
            'name': _name_of(meta['url']) or meta['url_sha1'],
        }
        try:
            return template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                reason='[image] key_template %r cannot be filled (%s: %s); '
                       'use the fields %s' % (template, type(exc).__name__,
                                              exc, ', '.join(sorted(fields)))
            ) from None

    def close(self):
        self.fetcher.close()

    def _overlap(self, url, key, name):
        """An :class:`OverlappedUpload` for a transfer (which uploads only
        what the store takes as a stream), or None where the key depends
        on the content's hash."""
        if not self.conf.image.overlap_min_bytes:
            return None
        if key is not None:
            def key_for(fmt):
                return key
        elif name:
            def key_for(fmt):
                return name_key(name, fmt)
        elif 'sha256' in _fields(self.conf.image.key_template):
            return None
        else:
            meta = {'url': url, 'url_sha1': url_sha1(url), 'sha256': None}

            def key_for(fmt):
                return self.default_key(dict(meta, format=fmt))
        return OverlappedUpload(self.store_driver, key_for,
                                self.conf.image.overlap_min_bytes)

    def _fetch(self, url, watcher=None, record=True, memory_max=0):
        """Download ``url``: ``(handle, data)``, ``data`` the image if it
        was kept in memory, else None (the image is in the spool)."""
        spool_id = self.spool.new_id()
        with _counted_failures():
            result = self.fetcher.download(
                url, self.spool.directory, name=self.spool.data_name(spool_id),
                watcher=watcher, memory_max=memory_max)
        metrics.IMAGE_BYTES.labels('downloaded').inc(result.size or 0)
        handle = dict(server=self.conf.host, spool_id=spool_id)
        handle.update((f, getattr(result, f)) for f in _HANDLE_FIELDS[2:])
        if record:
            try:
                self.spool.put(spool_id, handle)
            except BaseException:
                self.spool.remove(spool_id)
                raise
        return handle, result.data

    def _keep(self, handle, data):
        """Keep a download in the spool for store(): the image (if it was
        in memory) and ``handle``. False if that failed (logged: the caller
        then has no spool entry to name)."""
        try:
            if data is not None:
                self.spool.write_data(handle['spool_id'], data)
            self.spool.put(handle['spool_id'], handle)
        except OSError as exc:
            LOG.error('cannot keep the download of %s in the spool for a '
                      'retry of its upload: %s', handle['url'], exc)
            return False
        return True

    def _put(self, path, meta, key, overlap=None, data=None):
        key = key if key is not None else self.default_key(meta)
        with _counted_failures():
            if data is not None:
                result = self.store_driver.put_bytes(key, data)
            else:
                result = overlap and overlap.finish(key, meta['size'])
                if result is None:
                    result = self.store_driver.put_file(key, path)
        metrics.IMAGE_BYTES.labels('stored').inc(result.get('size') or 0)
        return {f: result.get(f) for f in ('key', 'size', 'etag', 'url')}


@contextlib.contextmanager
def _counted_failures():
    """Count what a download or an upload raises, by its type."""
    try:
        yield
    except Exception as exc:
        metrics.IMAGE_FAILURES.labels(type(exc).__name__).inc()
        raise


def name_key(name, fmt):
    """``name``, plus the extension of image format ``fmt`` if it has none."""
    if os.path.splitext(name)[1]:
        return name
    ext = image.extension(fmt)
    return '%s.%s' % (name, ext) if ext else name


def _fields(template):
    """The names of the fields a format string uses, without their
    indexing or attributes (``{sha256[:8]}`` uses ``sha256``); ``''``
    where it cannot be parsed."""
    try:
        return {re.split(r'[.\[]', f, maxsplit=1)[0]
                for _, f, _, _ in string.Formatter().parse(template) if f}
    except ValueError:
        return {''}


def _name_of(url):
    """Last path segment of ``url`` without extension, made key-safe."""
    segment = urllib.parse.urlsplit(url).path.rstrip('/').rpartition('/')[2]
    name = os.path.splitext(urllib.parse.unquote(segment))[0]
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._')[:100]
