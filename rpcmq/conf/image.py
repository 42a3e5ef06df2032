"""Options of image download, the spool and the image endpoint."""

import os
import tempfile

from oslo_config import cfg

IMAGE_OPTS = [
    cfg.StrOpt('spool_dir',
               default=os.path.join(tempfile.gettempdir(), 'rpcmq-spool'),
               sample_default='<system temp dir>/rpcmq-spool',
               help='Directory where fetch() keeps downloaded images until '
                    'store() uploads them. Use a local disk with room for '
                    'executor_thread_pool_size x max_image_bytes.'),
    cfg.IntOpt('spool_ttl', default=3600, min=1,
               help='Seconds a fetched image waits in the spool for '
                    'store(); older ones are deleted.'),
    cfg.IntOpt('download_retries', default=3, min=0,
               help='Retries after the first attempt when a download fails '
                    'on a connection error, a timeout, a body cut short or '
                    'a 5xx status. 4xx statuses are never retried.'),
    cfg.FloatOpt('download_backoff', default=0.5, min=0,
                 help='Seconds before the first retry; doubled on each '
                      'further retry, with random jitter.'),
    cfg.FloatOpt('download_backoff_max', default=10.0, min=0,
                 help='Longest wait between two download attempts.'),
    cfg.FloatOpt('connect_timeout', default=5.0, min=0.01,
                 help='Seconds to wait for a TCP connection to the image '
                      'server.'),
    cfg.FloatOpt('read_timeout', default=30.0, min=0.01,
                 help='Seconds to wait for any data from the image server '
                      'before the attempt fails (and is retried).'),
    cfg.FloatOpt('total_timeout', default=300.0, min=0.1,
                 help='Longest time one download attempt may take, however '
                      'steadily the server trickles; not retried.'),
    cfg.IntOpt('max_image_bytes', default=100 * 1024 * 1024, min=1,
               help='Largest image body in bytes. A larger Content-Length is '
                    'refused before reading; a body that grows past it is '
                    'cut off and discarded.'),
    cfg.IntOpt('max_image_pixels', default=89478485, min=1,
               help='Largest image in pixels (width x height); guards '
                    'against decompression bombs.'),
    cfg.ListOpt('image_formats',
                default=['jpeg', 'png', 'webp', 'gif', 'bmp', 'tiff'],
                help='Image formats (Pillow names, any case) a download may '
                     'be; anything else fails with NotAnImage.'),
    cfg.IntOpt('max_redirects', default=5, min=0,
               help='Redirects followed per download; each hop is checked '
                    'against the address guard.'),
    cfg.IntOpt('max_url_length', default=8192, min=64,
               help='Longest image URL in characters, redirect targets '
                    'included. A longer one fails with BadURL before any '
                    'request, and errors show only its first 100 '
                    'characters.'),
    cfg.BoolOpt('allow_private_networks', default=False,
                help='Allow downloads from loopback, private, link-local and '
                     'other non-public addresses. Off by default so a '
                     'caller cannot make servers reach internal services.'),
    cfg.ListOpt('allowed_networks', default=[],
                help='Networks in CIDR notation (e.g. 10.20.0.0/16) that '
                     'downloads may reach even though they are not public; '
                     'the rest stay refused.'),
    cfg.StrOpt('key_template', default='{url_sha1}.{ext}',
               help='Storage key of a stored image when the caller gives '
                    'none. Fields: {url_sha1} (sha1 hex of the URL as '
                    'given), {ext} (jpg, png, webp, ...), {format}, '
                    '{sha256} (of the content), {name} (last URL path '
                    'segment without extension).'),
    cfg.IntOpt('memory_max_bytes', default=1024 * 1024, min=0,
               help='transfer() keeps a download whose Content-Length is '
                    'at most this many bytes in memory and uploads it from '
                    'there; it reaches the spool only if its upload fails '
                    '(so that store() can retry it). Larger or unsized '
                    'downloads go to the spool. Memory needed: up to '
                    'executor_thread_pool_size times this. 0: always the '
                    'spool.'),
    cfg.IntOpt('overlap_min_bytes', default=1024 * 1024, min=0,
               help='transfer() uploads an image while it downloads when '
                    'the image server declares at least this many bytes '
                    'and the store can take a stream (oss, below [oss] '
                    'multipart_threshold). The object is complete, and '
                    'so exists, only once the download is whole and '
                    'verified; else the upload is cut short and nothing '
                    'is stored. 0 downloads first, then uploads.'),
    cfg.StrOpt('user_agent', default='rpcmq-fetch/0.1',
               help='User-Agent header of image downloads.'),
    cfg.IntOpt('chunk_size', default=64 * 1024, min=1024,
               help='Bytes read and written at a time while streaming a '
                    'download to disk.'),
]


def list_opts():
    return [('image', IMAGE_OPTS)]
