"""Object storage behind :mod:`rpcmq.testing.ossserver`.

Objects and parts live as files in a temporary directory (so a benchmark
of many 20 MB objects does not grow the process), metadata in memory.
Every object version is a new file, so a GET streaming an object is not
disturbed by a concurrent overwrite. CRC64-ECMA (CRC-64/XZ) is computed
with ``fastcrc``, as rpcmq's oss store does (oss2's crcmod-based
``Crc64`` takes 60 times as long: in a benchmark sharing the machine with
this server, it took CPU from the clients under test). ETags are
uppercase hex MD5 as OSS returns them (``<md5 of part md5s>-<n>`` for
multipart objects).
"""

import base64
import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
import time
import uuid

import fastcrc

__all__ = ['MIN_PART_SIZE', 'Backend', 'OSSError', 'ObjectInfo']

#: Smallest part but the last one, as OSS enforces (100 KiB).
MIN_PART_SIZE = 100 * 1024


class OSSError(Exception):
    """An error reply: HTTP status, OSS error code and message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclasses.dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str           # uppercase hex, no quotes
    crc64: int
    path: str
    content_type: str = 'application/octet-stream'
    last_modified: float = 0.0
    object_type: str = 'Normal'
    part_number: int = 0


def _no_bucket(bucket):
    return OSSError(404, 'NoSuchBucket',
                    f'The specified bucket {bucket} does not exist.')


def _no_upload(upload_id):
    return OSSError(404, 'NoSuchUpload', f'The specified upload {upload_id} '
                    'does not exist. The upload ID may be invalid, or the '
                    'upload may have been aborted or completed.')


class Backend:
    """Buckets of objects plus in-progress multipart uploads."""

    def __init__(self, root=None):
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix='rpcmq-ossserver-')
        os.makedirs(os.path.join(self.root, 'data'), exist_ok=True)
        self._lock = threading.Lock()
        self._buckets = {}      # name -> {key: ObjectInfo}
        self._uploads = {}      # upload id -> dict

    # -- buckets and objects -------------------------------------------
    def add_bucket(self, name):
        with self._lock:
            self._buckets.setdefault(name, {})

    def has_bucket(self, name):
        with self._lock:
            return name in self._buckets

    def _objects(self, bucket):
        try:
            return self._buckets[bucket]
        except KeyError:
            raise _no_bucket(bucket) from None

    def _write(self, chunks, content_md5=None):
        """Spool ``chunks`` to a new data file; return (path, size, md5
        digest, crc64)."""
        fd, path = tempfile.mkstemp(dir=os.path.join(self.root, 'data'))
        md5, crc, size = hashlib.md5(), 0, 0
        try:
            with os.fdopen(fd, 'wb') as f:
                for chunk in chunks:
                    md5.update(chunk)
                    crc = fastcrc.crc64.xz(chunk, crc)
                    size += len(chunk)
                    f.write(chunk)
            if content_md5 and base64.b64encode(md5.digest()).decode() \
                    != content_md5.strip():
                raise OSSError(400, 'InvalidDigest', 'The Content-MD5 you '
                               'specified did not match what we received.')
        except BaseException:
            os.unlink(path)
            raise
        return path, size, md5.digest(), crc

    def put_object(self, bucket, key, chunks, content_type=None,
                   content_md5=None):
        with self._lock:
            self._objects(bucket)  # NoSuchBucket before spooling the body
        path, size, digest, crc = self._write(chunks, content_md5)
        info = ObjectInfo(key, size, digest.hex().upper(), crc, path,
                          content_type or 'application/octet-stream',
                          time.time())
        self._replace(bucket, info)
        return info

    def _replace(self, bucket, info):
        with self._lock:
            objects = self._buckets.get(bucket)
            if objects is None:
                os.unlink(info.path)
                raise _no_bucket(bucket)
            old = objects.get(info.key)
            objects[info.key] = info
        if old is not None:
            os.unlink(old.path)  # readers holding it open keep reading

    def get_object(self, bucket, key):
        """The ObjectInfo of ``key`` or None; raises NoSuchBucket."""
        with self._lock:
            return self._objects(bucket).get(key)

    def delete_object(self, bucket, key):
        with self._lock:
            info = self._objects(bucket).pop(key, None)
        if info is not None:
            os.unlink(info.path)
        return info is not None

    # -- multipart ------------------------------------------------------
    def init_upload(self, bucket, key, content_type=None):
        upload_id = uuid.uuid4().hex.upper()
        with self._lock:
            self._objects(bucket)
            self._uploads[upload_id] = {
                'bucket': bucket, 'key': key, 'parts': {},
                'content_type': content_type or 'application/octet-stream',
                'initiated': time.time()}
        return upload_id

    def _upload(self, upload_id, bucket, key):
        upload = self._uploads.get(upload_id)
        if upload is None or (upload['bucket'], upload['key']) != (bucket,
                                                                   key):
            raise _no_upload(upload_id)
        return upload

    def upload_part(self, bucket, key, upload_id, number, chunks,
                    content_md5=None):
        if not 1 <= number <= 10000:
            raise OSSError(400, 'InvalidArgument', 'Part number must be an '
                           'integer between 1 and 10000, inclusive.')
        with self._lock:
            self._upload(upload_id, bucket, key)
        path, size, digest, crc = self._write(chunks, content_md5)
        part = ObjectInfo(key, size, digest.hex().upper(), crc, path,
                          last_modified=time.time(), part_number=number)
        with self._lock:
            try:
                parts = self._upload(upload_id, bucket, key)['parts']
            except OSSError:
                os.unlink(path)
                raise
            old = parts.get(number)
            parts[number] = part
        if old is not None:
            os.unlink(old.path)
        return part

    def list_parts(self, bucket, key, upload_id):
        with self._lock:
            parts = self._upload(upload_id, bucket, key)['parts']
            return [parts[n] for n in sorted(parts)]

    def abort_upload(self, bucket, key, upload_id):
        with self._lock:
            upload = self._upload(upload_id, bucket, key)
            del self._uploads[upload_id]
        for part in upload['parts'].values():
            os.unlink(part.path)

    def complete_upload(self, bucket, key, upload_id, wanted):
        """Join the parts ``wanted`` [(number, etag)] (None: all parts)."""
        with self._lock:
            upload = self._upload(upload_id, bucket, key)
            parts = dict(upload['parts'])
        if wanted is None:
            wanted = [(n, parts[n].etag) for n in sorted(parts)]
        chosen = []
        for i, (number, etag) in enumerate(wanted):
            if i and number <= wanted[i - 1][0]:
                raise OSSError(400, 'InvalidPartOrder', 'The list of parts '
                               'was not in ascending order.')
            part = parts.get(number)
            if part is None or part.etag != etag.strip('"').upper():
                raise OSSError(400, 'InvalidPart', f'Part {number} was not '
                               'uploaded or its ETag does not match.')
            if i < len(wanted) - 1 and part.size < MIN_PART_SIZE:
                raise OSSError(400, 'EntityTooSmall', f'Part {number} is '
                               'smaller than the minimum allowed size.')
            chosen.append(part)
        if not chosen:
            raise OSSError(400, 'MalformedXML', 'The XML you provided was '
                           'not well-formed or did not validate.')

        def chunks():
            for part in chosen:
                with open(part.path, 'rb') as f:
                    yield from iter(lambda: f.read(1024 * 1024), b'')

        path, size, _, crc = self._write(chunks())
        digests = b''.join(bytes.fromhex(p.etag) for p in chosen)
        etag = f'{hashlib.md5(digests).hexdigest().upper()}-{len(chosen)}'
        info = ObjectInfo(key, size, etag, crc, path, upload['content_type'],
                          time.time(), 'Multipart')
        with self._lock:
            if self._uploads.pop(upload_id, None) is None:
                os.unlink(path)
                raise _no_upload(upload_id)
        self._replace(bucket, info)
        for part in parts.values():
            os.unlink(part.path)
        return info

    def upload_count(self):
        with self._lock:
            return len(self._uploads)

    def close(self):
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
