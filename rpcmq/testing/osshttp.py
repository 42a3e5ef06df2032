"""HTTP side of :mod:`rpcmq.testing.ossserver`: parse, verify, dispatch.

One :class:`Handler` per connection (HTTP/1.1 keep-alive). A request is
located (path-style ``/bucket/key`` as oss2 sends to IP endpoints, or
virtual-host ``bucket.host``), checked against injected faults, its V1/V4
signature verified, then served by ``_op_<Operation>``. Bodies are always
drained, so an error reply never desynchronises a kept-alive connection.
The owning ``OSSServer`` is ``self.server.oss``.
"""

import base64
import email.utils
import http.server
import logging
import re
import sys
import time
import uuid
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from oss2.utils import is_ip_or_localhost

from rpcmq.testing import osssign
from rpcmq.testing.ossbackend import OSSError

__all__ = ['HTTPServer', 'Handler']

LOG = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_RANGE = re.compile(r'^bytes=(\d*)-(\d*)$')


def _operation(method, key, params):
    if not key:
        return None
    if method == 'PUT':
        return 'UploadPart' if 'uploadId' in params else 'PutObject'
    if method == 'GET':
        return 'ListParts' if 'uploadId' in params else 'GetObject'
    if method == 'HEAD':
        return 'GetObjectMeta' if 'objectMeta' in params else 'HeadObject'
    if method == 'DELETE':
        return ('AbortMultipartUpload' if 'uploadId' in params
                else 'DeleteObject')
    if method == 'POST':
        if 'uploads' in params:
            return 'InitiateMultipartUpload'
        if 'uploadId' in params:
            return 'CompleteMultipartUpload'
    return None


def _xml(root, fields):
    body = ''.join(f'<{k}>{escape(str(v))}</{k}>' for k, v in fields)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{body}'
            f'</{root}>').encode()


def _iso(ts):
    return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(ts))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'rpcmq-ossserver/1.0'
    timeout = 60  # idle keep-alive connections are dropped after this

    def setup(self):
        super().setup()
        self.server.oss._track(self.connection, True)

    def finish(self):
        self.server.oss._track(self.connection, False)
        super().finish()

    def log_message(self, fmt, *args):
        LOG.debug('%s ' + fmt, self.address_string(), *args)

    def do_GET(self):
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # -- plumbing --------------------------------------------------------
    def _chunks(self):
        """The request body, chunk by chunk (Content-Length or chunked)."""
        if self._body != 'unread':
            return
        self._body = 'reading'
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            while True:
                size = int(self.rfile.readline(1024).split(b';')[0], 16)
                if not size:
                    while self.rfile.readline(1024).strip():
                        pass
                    break
                data = self.rfile.read(size)
                self.rfile.readline(1024)
                self._received(data)
                yield data
        else:
            left = int(self.headers.get('Content-Length') or 0)
            while left > 0:
                data = self.rfile.read1(min(left, _CHUNK))
                if not data:
                    raise ConnectionError('client closed the connection')
                left -= len(data)
                self._received(data)
                yield data
        self._body = 'read'

    def _received(self, data):
        self._bytes_in += len(data)
        if self._record is not None:
            self._record['bytes_in'] = self._bytes_in

    def _drain(self):
        if self._body == 'unread':
            for _ in self._chunks():
                pass
        elif self._body != 'read':
            self.close_connection = True

    def _commit(self):
        """Log the request once, before the client can see the reply."""
        record, self._record = self._record, None
        if record is not None:
            record.update(status=self._status, bytes_in=self._bytes_in)
            self.server.oss._record(record)

    def _reply(self, status, body=b'', headers=(), stream=None, length=None):
        self._status = status
        self._commit()
        self.send_response(status)
        self.send_header('x-oss-request-id', self._request_id)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Length',
                         str(len(body) if length is None else length))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command == 'HEAD':
            return
        if stream is None:
            self.wfile.write(body)
            return
        left = length
        while left > 0:
            data = stream.read(min(left, _CHUNK))
            if not data:
                break
            self.wfile.write(data)
            left -= len(data)

    def _error(self, err):
        body = _xml('Error', [('Code', err.code), ('Message', err.message),
                              ('RequestId', self._request_id),
                              ('HostId', self.headers.get('Host', ''))])
        if self.command == 'HEAD':
            self._reply(err.status, headers=[
                ('x-oss-err', base64.b64encode(body).decode())])
        else:
            self._reply(err.status, body, [('Content-Type',
                                            'application/xml')])

    def _locate(self, path):
        """(bucket, key) from the Host header and the URL path."""
        host = (self.headers.get('Host') or '').rsplit(':', 1)[0]
        label = host.split('.', 1)[0]
        if host and not is_ip_or_localhost(host) and '.' in host and \
                self.server.oss.backend.has_bucket(label):
            return label, unquote(path[1:])
        bucket, _, key = path[1:].partition('/')
        return unquote(bucket), unquote(key)

    def _dispatch(self):
        oss = self.server.oss
        self._body, self._bytes_in, self._status = 'unread', 0, None
        self._request_id = uuid.uuid4().hex[:24].upper()
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        bucket, key = self._locate(split.path)
        op = _operation(self.command, key, params)
        self._record = record = {
            'op': op, 'method': self.command, 'bucket': bucket, 'key': key,
            'params': params, 'access_key_id': None, 'auth': None,
            'request_id': self._request_id, 'bytes_in': 0}
        oss._begin(record)
        self._bad_crc = False
        try:
            fault = oss._take_fault(op)
            if fault and fault['mode'] == 'disconnect':
                self._drain()
                self.close_connection = True
                self._status = 'disconnected'
                return
            if fault and fault['mode'] == 'error':
                raise OSSError(fault['status'], fault['code'],
                               'Injected failure, please retry.')
            self._bad_crc = bool(fault)
            try:
                signer = osssign.verify(self.command, bucket, key, params,
                                        self.headers, oss.credentials)
            except osssign.SignatureError as e:
                record['access_key_id'] = e.access_key_id
                raise OSSError(403, e.code, e.message) from None
            record['access_key_id'] = signer.access_key_id
            record['auth'] = signer.version
            if signer.version == 'v4' and oss.region and \
                    signer.region != oss.region:
                raise OSSError(403, 'SignatureDoesNotMatch', 'Invalid '
                               f'signing region {signer.region!r}, '
                               f'expected {oss.region!r}.')
            if op is None:
                raise OSSError(400, 'NotImplemented', 'rpcmq-ossserver '
                               f'does not implement {self.command} '
                               f'{split.path}.')
            getattr(self, '_op_' + op)(oss.backend, bucket, key, params)
            self._drain()
        except OSSError as e:
            self._drain()
            self._error(e)
        except (ConnectionError, TimeoutError):  # the client went away
            self.close_connection = True
            self._status = self._status or 'aborted'
        except Exception:
            LOG.exception('%s %s failed', self.command, self.path)
            self.close_connection = True
            if self._status is None:
                self._error(OSSError(500, 'InternalError', 'We encountered '
                                     'an internal error. Please try again.'))
        finally:
            self._commit()

    def _object_headers(self, info):
        crc = info.crc64 ^ 1 if self._bad_crc else info.crc64
        return [('ETag', f'"{info.etag}"'),
                ('x-oss-hash-crc64ecma', str(crc)),
                ('Last-Modified', email.utils.formatdate(info.last_modified,
                                                         usegmt=True))]

    def _need(self, backend, bucket, key):
        info = backend.get_object(bucket, key)
        if info is None:
            raise OSSError(404, 'NoSuchKey',
                           'The specified key does not exist.')
        return info

    # -- operations --------------------------------------------------------
    def _op_PutObject(self, backend, bucket, key, params):
        info = backend.put_object(bucket, key, self._chunks(),
                                  self.headers.get('Content-Type'),
                                  self.headers.get('Content-MD5'))
        self._reply(200, headers=self._object_headers(info))

    def _op_HeadObject(self, backend, bucket, key, params):
        info = self._need(backend, bucket, key)
        self._reply(200, headers=self._object_headers(info) + [
            ('Content-Type', info.content_type),
            ('x-oss-object-type', info.object_type)], length=info.size)

    _op_GetObjectMeta = _op_HeadObject

    def _op_GetObject(self, backend, bucket, key, params):
        info = self._need(backend, bucket, key)
        start, length, status = 0, info.size, 200
        headers = self._object_headers(info) + [
            ('Content-Type', info.content_type), ('Accept-Ranges', 'bytes'),
            ('x-oss-object-type', info.object_type)]
        match = _RANGE.match(self.headers.get('Range', '').strip())
        if match and info.size and match.group(1) + match.group(2):
            first, last = match.groups()
            if first:
                start = int(first)
                end = min(int(last), info.size - 1) if last else info.size - 1
            else:
                start, end = max(info.size - int(last), 0), info.size - 1
            if start < info.size and start <= end:
                length, status = end - start + 1, 206
                headers.append(('Content-Range',
                                f'bytes {start}-{end}/{info.size}'))
            else:
                start = 0
        try:
            with open(info.path, 'rb') as f:
                f.seek(start)
                self._reply(status, headers=headers, stream=f, length=length)
        except FileNotFoundError:  # overwritten or deleted meanwhile
            raise OSSError(404, 'NoSuchKey', 'The specified key does not '
                           'exist.') from None

    def _op_DeleteObject(self, backend, bucket, key, params):
        backend.delete_object(bucket, key)
        self._reply(204)

    def _op_InitiateMultipartUpload(self, backend, bucket, key, params):
        upload_id = backend.init_upload(bucket, key,
                                        self.headers.get('Content-Type'))
        self._reply(200, _xml('InitiateMultipartUploadResult', [
            ('Bucket', bucket), ('Key', key), ('UploadId', upload_id)]),
            [('Content-Type', 'application/xml')])

    def _op_UploadPart(self, backend, bucket, key, params):
        try:
            number = int(params.get('partNumber', ''))
        except ValueError:
            raise OSSError(400, 'InvalidArgument', 'partNumber must be an '
                           'integer between 1 and 10000.') from None
        part = backend.upload_part(bucket, key, params['uploadId'], number,
                                   self._chunks(),
                                   self.headers.get('Content-MD5'))
        self._reply(200, headers=self._object_headers(part))

    def _op_ListParts(self, backend, bucket, key, params):
        parts = backend.list_parts(bucket, key, params['uploadId'])
        marker = int(params.get('part-number-marker') or 0)
        limit = max(int(params.get('max-parts') or 1000), 1)
        parts = [p for p in parts if p.part_number > marker]
        page, truncated = parts[:limit], len(parts) > limit
        body = _xml('ListPartsResult', [
            ('Bucket', bucket), ('Key', key),
            ('UploadId', params['uploadId']), ('PartNumberMarker', marker),
            ('NextPartNumberMarker', page[-1].part_number if page else 0),
            ('MaxParts', limit), ('IsTruncated', str(truncated).lower())])
        items = ''.join(
            f'<Part><PartNumber>{p.part_number}</PartNumber><LastModified>'
            f'{_iso(p.last_modified)}</LastModified><ETag>"{p.etag}"</ETag>'
            f'<HashCrc64ecma>{p.crc64}</HashCrc64ecma><Size>{p.size}</Size>'
            '</Part>' for p in page).encode()
        body = body.replace(b'</ListPartsResult>',
                            items + b'</ListPartsResult>')
        self._reply(200, body, [('Content-Type', 'application/xml')])

    def _op_CompleteMultipartUpload(self, backend, bucket, key, params):
        raw = b''.join(self._chunks())
        wanted = None
        if self.headers.get('x-oss-complete-all', '').lower() != 'yes':
            try:
                root = ElementTree.fromstring(raw)
                wanted = [(int(p.findtext('PartNumber')),
                           p.findtext('ETag') or '')
                          for p in root.findall('Part')]
            except (ElementTree.ParseError, TypeError, ValueError):
                raise OSSError(400, 'MalformedXML', 'The XML you provided '
                               'was not well-formed.') from None
        info = backend.complete_upload(bucket, key, params['uploadId'],
                                       wanted)
        self._reply(200, _xml('CompleteMultipartUploadResult', [
            ('Location', (f'http://{self.headers.get("Host", "")}/{bucket}/'
                          f'{quote(key)}')),
            ('Bucket', bucket), ('Key', key), ('ETag', f'"{info.etag}"')]),
            self._object_headers(info) + [('Content-Type',
                                           'application/xml')])

    def _op_AbortMultipartUpload(self, backend, bucket, key, params):
        backend.abort_upload(bucket, key, params['uploadId'])
        self._reply(204)


class HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # benchmarks open many connections at once

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            LOG.debug('connection from %s dropped: %s', client_address, exc)
        else:
            LOG.exception('error serving %s', client_address)
