"""An OSS-compatible HTTP server for tests, the demo and benchmarks.

A threaded ``http.server`` on 127.0.0.1 (ephemeral port by default) that
speaks enough of the Alibaba Cloud OSS API for oss2's object and multipart
calls: PutObject, GetObject (with Range), HeadObject, GetObjectMeta,
DeleteObject, InitiateMultipartUpload, UploadPart, ListParts,
CompleteMultipartUpload and AbortMultipartUpload. Every request must carry
a valid OSS V1 or V4 signature (:mod:`rpcmq.testing.osssign`); replies
carry ``ETag``, ``x-oss-request-id`` and ``x-oss-hash-crc64ecma`` so
oss2's CRC64 checks run. oss2 addresses IP endpoints path-style
(``/bucket/key``); virtual-host style (``bucket.host``) works as well.

Usage::

    with OSSServer(credentials={'id': 'secret'}, buckets=['b']) as srv:
        srv.endpoint                  # 'http://127.0.0.1:PORT'
        srv.fail_next(2, status=503)  # fault injection
        srv.count('UploadPart')       # request log

Run standalone: ``python -m rpcmq.testing.ossserver --port 9000``.
"""

import argparse
import socket
import threading

from rpcmq.testing.ossbackend import Backend
from rpcmq.testing.osshttp import Handler, HTTPServer

__all__ = ['DEFAULT_CREDENTIALS', 'OSSServer', 'main']


#: Credentials the server knows when none are given (test values).
DEFAULT_CREDENTIALS = {'rpcmq-test-key': 'rpcmq-test-secret'}

_DEFAULT_CODES = {500: 'InternalError', 502: 'BadGateway',
                  503: 'ServiceUnavailable', 504: 'GatewayTimeout',
                  403: 'AccessDenied', 429: 'TooManyRequests'}


class OSSServer:
    """An in-process OSS-compatible server; see the module docstring.

    :param credentials: mapping access key id -> secret accepted in
        signatures (default :data:`DEFAULT_CREDENTIALS`)
    :param buckets: bucket names that exist
    :param region: if set, V4 signatures must use this region
    :param root: directory for object data (default: a temporary
        directory removed by :meth:`stop`)
    """

    def __init__(self, credentials=None, buckets=('rpcmq',),
                 host='127.0.0.1', port=0, region=None, root=None):
        self.credentials = dict(credentials or DEFAULT_CREDENTIALS)
        self.region = region
        self.backend = Backend(root)
        for name in buckets:
            self.backend.add_bucket(name)
        self._address = (host, port)
        self._lock = threading.Lock()
        self._faults, self._log, self._conns = [], [], set()
        self._active = []
        self._httpd = self._thread = None

    # -- life cycle --------------------------------------------------------
    def start(self):
        self._httpd = HTTPServer(self._address, Handler)
        self._httpd.oss = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        name='ossserver', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, drop open connections and remove the data."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for conn in conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._httpd = None
        self.backend.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def endpoint(self):
        return f'http://{self._httpd.server_address[0]}:{self.port}'

    def _track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # -- setup and inspection ---------------------------------------------
    def add_bucket(self, name):
        self.backend.add_bucket(name)

    def add_credentials(self, access_key_id, secret):
        self.credentials[access_key_id] = secret

    def object_info(self, bucket, key):
        """The stored :class:`ObjectInfo` (size, etag, crc64, ...) or None."""
        return self.backend.get_object(bucket, key)

    def get_object(self, bucket, key):
        """The stored bytes of an object (KeyError if absent)."""
        info = self.object_info(bucket, key)
        if info is None:
            raise KeyError(f'{bucket}/{key}')
        with open(info.path, 'rb') as f:
            return f.read()

    def upload_count(self):
        """Multipart uploads initiated and neither completed nor aborted."""
        return self.backend.upload_count()

    # -- fault injection and request log ----------------------------------
    def fail_next(self, count=1, status=503, code=None, op=None, after=0,
                  mode='error'):
        """Make the next ``count`` requests (of operation ``op``, after
        letting ``after`` of them pass) fail.

        ``mode``: 'error' replies ``status``/``code`` with an OSS error
        body; 'disconnect' closes the connection without a reply;
        'bad_crc' serves the request but returns a wrong CRC64.
        """
        if mode not in ('error', 'disconnect', 'bad_crc'):
            raise ValueError(f'unknown fault mode {mode!r}')
        with self._lock:
            self._faults.append({'count': count, 'status': status,
                                 'code': code or _DEFAULT_CODES.get(
                                     status, 'InternalError'),
                                 'op': op, 'after': after, 'mode': mode})

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def _take_fault(self, op):
        with self._lock:
            for fault in self._faults:
                if fault['op'] not in (None, op):
                    continue
                if fault['after'] > 0:
                    fault['after'] -= 1
                    continue
                fault['count'] -= 1
                if fault['count'] <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _begin(self, record):
        with self._lock:
            self._active.append(record)

    def _record(self, record):
        with self._lock:
            if record in self._active:
                self._active.remove(record)
            self._log.append(record)

    def receiving(self, op=None):
        """Requests still being received or handled (as :meth:`requests`;
        ``bytes_in`` so far, no ``status`` yet)."""
        with self._lock:
            return [dict(r) for r in self._active if op in (None, r['op'])]

    def requests(self, op=None):
        """Logged requests (dicts: op, method, bucket, key, params, status,
        access_key_id, auth, bytes_in, request_id), oldest first. ``status``
        is the HTTP status, or 'disconnected' / 'aborted'; ``auth`` is
        'v1', 'v4' or None (not verified)."""
        with self._lock:
            return [dict(r) for r in self._log if op in (None, r['op'])]

    def ops(self):
        return [r['op'] for r in self.requests()]

    def count(self, op=None, status=None):
        return sum(1 for r in self.requests(op)
                   if status in (None, r['status']))

    def clear_log(self):
        with self._lock:
            self._log = []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--bucket', action='append', dest='buckets')
    parser.add_argument('--credentials', action='append', metavar='ID:SECRET')
    parser.add_argument('--region', default=None)
    parser.add_argument('--root', default=None)
    args = parser.parse_args(argv)
    creds = dict(c.split(':', 1) for c in args.credentials or ()) or None
    server = OSSServer(creds, args.buckets or ['rpcmq'], args.host,
                       args.port, args.region, args.root).start()
    print(f'rpcmq-ossserver on {server.endpoint}, buckets '
          f'{", ".join(args.buckets or ["rpcmq"])}, key ids '
          f'{", ".join(server.credentials)}', flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == '__main__':
    main()
