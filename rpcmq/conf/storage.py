"""Options of the object stores: the driver, [file_store] and [oss]."""

import os
import tempfile

from oslo_config import cfg

DEFAULT_OPTS = [
    cfg.StrOpt('store', default='file', choices=['file', 'oss'],
               help='Object store that receives transferred files: file (a '
                    'local directory, see [file_store]) or oss (Alibaba '
                    'Cloud OSS or a compatible server, see [oss]).'),
]

FILE_STORE_OPTS = [
    cfg.StrOpt('root',
               default=os.path.join(tempfile.gettempdir(), 'rpcmq-store'),
               sample_default='$TMPDIR/rpcmq-store',
               help='Directory that holds the objects of the file store; '
                    'a key a/b/c.jpg is the file <root>/a/b/c.jpg. Created '
                    'on first use.'),
    cfg.StrOpt('base_url', default='',
               help='URL prefix of the returned object URLs, e.g. '
                    'https://cdn.example.com/images/ (the key is appended). '
                    'Empty: a file:// URL of the stored file.'),
]

_MIB = 1024 * 1024
_MIN_PART = 100 * 1024

OSS_OPTS = [
    cfg.StrOpt('endpoint', default='',
               help='OSS endpoint URL, e.g. '
                    'https://oss-cn-hangzhou.aliyuncs.com, or '
                    'http://127.0.0.1:PORT for rpcmq.testing.ossserver.'),
    cfg.StrOpt('bucket', default='',
               help='Bucket that receives the objects.'),
    cfg.StrOpt('access_key_id', default='',
               help='AccessKey ID used to sign OSS requests.'),
    cfg.StrOpt('access_key_secret', default='', secret=True,
               help='AccessKey secret used to sign OSS requests. Never '
                    'logged.'),
    cfg.StrOpt('auth_version', default='v1', choices=['v1', 'v4'],
               help='OSS signature version: v1 (HMAC-SHA1) or v4 '
                    '(OSS4-HMAC-SHA256, needs region). v4 is recommended '
                    'for Alibaba Cloud.'),
    cfg.StrOpt('region', default='',
               help='OSS region such as cn-hangzhou; required by '
                    'auth_version = v4.'),
    cfg.IntOpt('multipart_threshold', default=64 * _MIB, min=_MIN_PART,
               help='Files of this many bytes or more are uploaded in '
                    'parts with a resumable multipart upload; smaller ones '
                    'in one PutObject, which is faster for them '
                    '(tools/bench_oss_upload.py).'),
    cfg.IntOpt('part_size', default=8 * _MIB, min=_MIN_PART,
               help='Bytes per part of a multipart upload (OSS minimum '
                    '100 KiB; oss2 raises it for files of over 10000 '
                    'parts).'),
    cfg.IntOpt('upload_threads', default=4, min=1,
               help='Parts of one multipart upload sent at once.'),
    cfg.IntOpt('upload_retries', default=3, min=0,
               help='Retries of an OSS request after a connection error, '
                    'a timeout, a CRC mismatch or an HTTP 5xx (so up to '
                    'upload_retries + 1 attempts). HTTP 403 is never '
                    'retried. A retried multipart upload resumes from its '
                    'checkpoint.'),
    cfg.FloatOpt('retry_backoff', default=0.5, min=0,
                 help='Seconds before the first retry; each further retry '
                      'waits twice as long, up to retry_backoff_max.'),
    cfg.FloatOpt('retry_backoff_max', default=10.0, min=0,
                 help='Longest wait between two retries, in seconds.'),
    cfg.FloatOpt('connect_timeout', default=30.0, min=0.1,
                 help='Seconds oss2 waits to connect and for each read of '
                      'a response.'),
    cfg.StrOpt('checkpoint_dir', default='',
               help='Directory of the resumable upload checkpoints (never '
                    'the home directory). Empty: oss-checkpoints inside '
                    '[image] spool_dir, beside the files being uploaded.'),
    cfg.StrOpt('public_base_url', default='',
               help='URL prefix of the returned object URLs, e.g. a CDN '
                    'domain bound to the bucket. Empty: the bucket URL '
                    'on the endpoint.'),
]


def list_opts():
    return [('DEFAULT', DEFAULT_OPTS), ('file_store', FILE_STORE_OPTS),
            ('oss', OSS_OPTS)]
