"""The ``oss`` store: Alibaba Cloud OSS, or a compatible server, via oss2.

* Signing: ``oss2.Auth`` (``[oss] auth_version = v1``) or ``oss2.AuthV4``
  with ``[oss] region`` (v4).
* Files smaller than ``multipart_threshold`` go up in one PutObject; larger
  ones through ``oss2.resumable_upload`` (parts of ``part_size`` sent by
  ``upload_threads`` threads) whose checkpoints live in
  ``[oss] checkpoint_dir``, never in the home directory.
* Every upload and read is checked by CRC64: the store computes the
  CRC64-ECMA of the file with ``fastcrc`` (a few milliseconds per 10 MiB;
  oss2's own check, ``enable_crc``, runs crcmod over every byte sent,
  about 25-35 ms per 10 MiB, and is off) and compares it with the
  ``x-oss-hash-crc64ecma`` OSS answers with, for a multipart upload that
  of the whole object. A mismatch is retried.
* ``put_stream`` (files below ``multipart_threshold``) sends one
  PutObject with a Content-Length while its bytes are still being
  produced; it is not retried (a stream cannot be sent again), its
  caller falls back to ``put_file``.
* Retries: one policy, :meth:`OSSStore._call`. Connection errors,
  timeouts, CRC mismatches, HTTP 429 and 5xx are retried
  ``upload_retries`` times with exponential backoff (a retried multipart
  upload resumes from its checkpoint); then :class:`StorageUnavailable`.
  HTTP 403 raises :class:`StorageDenied` at once.
* ``etag`` in ``put_file`` results is the OSS ETag without quotes
  (uppercase hex MD5 for a single PUT, ``<hex>-<parts>`` for multipart).
"""

import logging
import os
import time
from urllib.parse import quote, urlsplit

import fastcrc
import oss2
from oss2 import exceptions as oss_exc
from oss2.utils import check_crc, is_ip_or_localhost

from rpcmq.exceptions import ConfigError
from rpcmq.storage import base, errors

__all__ = ['OSSStore']

LOG = logging.getLogger(__name__)

_REQUIRED = ('endpoint', 'bucket', 'access_key_id', 'access_key_secret')
_CRC_CHUNK = 1024 * 1024


def crc64_of_file(path):
    """The CRC64-ECMA of the file at ``path``, as OSS computes it
    (``x-oss-hash-crc64ecma``; CRC-64/XZ)."""
    crc = 0
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CRC_CHUNK), b''):
            crc = fastcrc.crc64.xz(chunk, crc)
    return crc


def _transient(err):
    """True for failures worth retrying: network, CRC, 429 and 5xx."""
    if isinstance(err, (oss_exc.RequestError, oss_exc.InconsistentError)):
        return True
    return isinstance(err, oss_exc.ServerError) and (
        err.status >= 500 or err.status == 429)


def _describe(err):
    """A short, secret-free sentence about an oss2 error."""
    if isinstance(err, oss_exc.RequestError):
        cause = err.exception
        return f'connection failed: {type(cause).__name__}: {cause}'
    if isinstance(err, oss_exc.InconsistentError):
        return ('CRC64 of the data sent and of the data OSS stored differ '
                '(corrupted in transit)')
    if isinstance(err, oss_exc.ClientError):
        return str(err.body)
    text = f'HTTP {err.status} {err.code or "error"}'
    if err.message:
        text += f': {err.message}'
    if err.request_id:
        text += f' (request id {err.request_id})'
    return text


class OSSStore(base.Store):
    """Objects in an OSS bucket; see the module docstring."""

    name = 'oss'

    def __init__(self, conf):
        super().__init__(conf)
        opts = conf.oss
        missing = [f'[oss] {name}' for name in _REQUIRED
                   if not getattr(opts, name)]
        if missing:
            raise ConfigError(
                reason=f'the oss store needs {", ".join(missing)}; set '
                       'them in the configuration file',
                option=missing[0])
        if opts.auth_version == 'v4' and not opts.region:
            raise ConfigError(reason='[oss] auth_version = v4 needs [oss] '
                                     'region, e.g. cn-hangzhou',
                              option='[oss] region')
        self.bucket_name = opts.bucket
        self.access_key_id = opts.access_key_id
        self.multipart_threshold = opts.multipart_threshold
        self.part_size = opts.part_size
        self.upload_threads = opts.upload_threads
        self.retries = opts.upload_retries
        self.backoff = opts.retry_backoff
        self.backoff_max = opts.retry_backoff_max
        self.checkpoint_dir = opts.checkpoint_dir or os.path.join(
            conf.image.spool_dir, 'oss-checkpoints')
        self.public_base_url = opts.public_base_url or ''
        if opts.auth_version == 'v4':
            auth = oss2.AuthV4(opts.access_key_id, opts.access_key_secret)
        else:
            auth = oss2.Auth(opts.access_key_id, opts.access_key_secret)
        session = oss2.Session(pool_size=max(10, 4 * self.upload_threads))
        try:
            self.bucket = oss2.Bucket(
                auth, opts.endpoint, opts.bucket, session=session,
                connect_timeout=opts.connect_timeout, enable_crc=False,
                region=opts.region or None, app_name='rpcmq')
        except oss_exc.ClientError as e:
            raise ConfigError(
                reason=f'[oss] endpoint {opts.endpoint!r} or bucket '
                       f'{opts.bucket!r} is not valid: {_describe(e)}',
                option='[oss] endpoint') from None
        self.endpoint = self.bucket.endpoint

    def __repr__(self):
        return f'<OSSStore {self.endpoint} bucket={self.bucket_name}>'

    def url_for(self, key):
        """Public URL of ``key`` (``public_base_url`` or the bucket URL)."""
        path = quote(key, safe='/')
        if self.public_base_url:
            return f'{self.public_base_url.rstrip("/")}/{path}'
        parts = urlsplit(self.endpoint)
        if is_ip_or_localhost(parts.netloc):
            return f'{parts.scheme}://{parts.netloc}/{self.bucket_name}/{path}'
        return f'{parts.scheme}://{self.bucket_name}.{parts.netloc}/{path}'

    # -- the retry policy ------------------------------------------------
    def _call(self, op, key, func, retries=None):
        """Run ``func()`` under the store's retry policy (the only one).

        Transient failures (see :func:`_transient`) are retried up to
        ``upload_retries`` times, waiting ``retry_backoff * 2**n`` seconds
        (at most ``retry_backoff_max``). 403 -> StorageDenied, 404 on a
        read -> NoSuchObject, anything else -> StorageError, all at once.
        """
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(1, attempts + 1):
            try:
                return func()
            except oss_exc.OssError as e:
                err = e
            if err.status == 403:
                raise errors.StorageDenied(
                    store=self.name, endpoint=self.endpoint, op=op, key=key,
                    bucket=self.bucket_name, status=403,
                    code=err.code or 'AccessDenied',
                    access_key_id=self.access_key_id,
                    request_id=err.request_id) from None
            if err.status == 404 and op == 'get' and \
                    err.code in ('NoSuchKey', ''):
                raise errors.NoSuchObject(key=key, store=self.name) from None
            if not _transient(err):
                raise errors.StorageError(
                    reason=f'{op} of {key!r} in bucket {self.bucket_name!r} '
                           f'at {self.endpoint} failed: {_describe(err)}',
                    key=key, op=op, status=err.status,
                    code=err.code) from None
            if attempt < attempts:
                delay = min(self.backoff * 2 ** (attempt - 1),
                            self.backoff_max)
                LOG.warning('OSS %s of %r failed (attempt %d of %d): %s; '
                            'retrying in %.2fs', op, key, attempt, attempts,
                            _describe(err), delay)
                time.sleep(delay)
        raise errors.StorageUnavailable(
            store=self.name, endpoint=self.endpoint, op=op, key=key,
            bucket=self.bucket_name, attempts=attempts,
            reason=_describe(err)) from None

    # -- the Store interface ---------------------------------------------
    def put_file(self, key, path):
        self.validate_key(key)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise errors.StorageError(
                reason=f'cannot read source file {path} for key {key!r}: '
                       f'{e.strerror or e}', key=key, path=path) from None
        if size >= self.multipart_threshold:
            checkpoints = self._checkpoints()

            def send():
                return oss2.resumable_upload(
                    self.bucket, key, path, store=checkpoints,
                    multipart_threshold=self.multipart_threshold,
                    part_size=self.part_size, num_threads=self.upload_threads)
        else:
            def send():
                return self.bucket.put_object_from_file(key, path)

        def upload():
            result = send()
            check_crc('put object', crc, result.crc, result.request_id)
            return result
        try:
            crc = crc64_of_file(path)
            result = self._call('put', key, upload)
        except OSError as e:  # the local file vanished or became unreadable
            raise errors.StorageError(
                reason=f'cannot read source file {path} for key {key!r}: '
                       f'{e.strerror or e}', key=key, path=path) from None
        return self._stored(key, size, result)

    def put_bytes(self, key, data):
        """One PutObject of ``data`` (checked by CRC64, retried as
        :meth:`put_file`); as large as a multipart upload: from a file."""
        if len(data) >= self.multipart_threshold:
            return super().put_bytes(key, data)
        self.validate_key(key)
        crc = fastcrc.crc64.xz(data)

        def upload():
            result = self.bucket.put_object(key, data)
            check_crc('put object', crc, result.crc, result.request_id)
            return result
        return self._stored(key, len(data), self._call('put', key, upload))

    def streams(self, size):
        return size < self.multipart_threshold

    def put_stream(self, key, chunks, size):
        """One PutObject of the ``size`` bytes ``chunks`` yields, sent as
        they come and checked by CRC64; not retried. Nothing is stored
        unless ``chunks`` yields exactly ``size`` bytes: an exception it
        raises cuts the request short and propagates."""
        self.validate_key(key)
        body = _CountedBody(chunks, size)

        def upload():
            result = self.bucket.put_object(key, body)
            if body.sent != size:
                # Never reached with a compliant server: it waits for
                # Content-Length bytes. Said loudly if one does not.
                raise errors.StorageError(
                    reason=f'put of {key!r} sent {body.sent} bytes of '
                           f'{size}', key=key, op='put')
            check_crc('put object', body.crc, result.crc, result.request_id)
            return result
        return self._stored(key, size,
                            self._call('put', key, upload, retries=0))

    def _stored(self, key, size, result):
        """The ``put_*`` result of an upload oss2 answered ``result``."""
        LOG.debug('stored %s (%d bytes) in OSS bucket %s', key, size,
                  self.bucket_name)
        return {'key': key, 'size': size, 'etag': result.etag,
                'url': self.url_for(key)}

    def _checkpoints(self):
        try:
            return oss2.ResumableStore(root=self.checkpoint_dir, dir='upload')
        except OSError as e:
            raise errors.StorageError(
                reason=f'cannot create the checkpoint directory under '
                       f'[oss] checkpoint_dir {self.checkpoint_dir}: '
                       f'{e.strerror or e}',
                path=self.checkpoint_dir) from None

    def exists(self, key):
        self.validate_key(key)
        return self._call('exists', key,
                          lambda: self.bucket.object_exists(key))

    def delete(self, key):
        self.validate_key(key)
        self._call('delete', key, lambda: self.bucket.delete_object(key))

    def signed_url(self, key, expires=300):
        """A presigned GET URL of ``key`` (signed here, no request)."""
        self.validate_key(key)
        return self.bucket.sign_url('GET', key, int(expires),
                                    slash_safe=True)

    def get_bytes(self, key):
        """The whole object in memory, its CRC64 checked."""
        self.validate_key(key)

        def read():
            result = self.bucket.get_object(key)
            data = result.read()
            check_crc('get object', fastcrc.crc64.xz(data),
                      result.server_crc, result.request_id)
            return data
        return self._call('get', key, read)

    def close(self):
        self.bucket.session.session.close()


class _CountedBody:
    """A request body of known length (requests sends a Content-Length)
    whose bytes come from an iterable, counted and CRC64-summed."""

    def __init__(self, chunks, size):
        self._chunks, self._size = chunks, size
        self.sent = self.crc = 0

    def __len__(self):
        return self._size

    def __iter__(self):
        for chunk in self._chunks:
            self.crc = fastcrc.crc64.xz(chunk, self.crc)
            self.sent += len(chunk)
            yield chunk
