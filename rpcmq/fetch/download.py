"""Reliable image download: streamed to disk, limited, retried, verified.

One attempt follows redirects by hand (each hop passes the address guard),
streams the body in ``chunk_size`` pieces to a ``.part-*`` temp file in the
destination directory while counting bytes and hashing, and stops at
``max_bytes`` whatever the server declared. An attempt that fails on a
connection error, a timeout, a body cut mid-stream or a 5xx status is
retried after an exponential backoff with jitter; anything else fails at
once. The finished file is checked by Pillow, then renamed into place -- on
any failure no file is left behind.

The URL, and every redirect target, passes
:func:`~rpcmq.fetch.urls.check_url` before it is requested: http(s) only,
no user info, at most ``max_url_length`` characters, a host name DNS can
take. A refused one fails with ``BadURL`` (permanent, never retried), so
the URLs in the other errors carry no password.

``total_timeout`` is a wall-clock bound on each attempt -- connect, every
redirect hop, headers and body -- however steadily the server drips: the
attempt runs inside a :class:`~rpcmq.fetch.guard.Deadline`, whose watchdog
shuts the connection down when it passes (on OS threads and on eventlet
green threads alike). Whatever error or early end of body that causes, an
attempt whose deadline passed fails with ``DownloadFailed`` naming
total_timeout, and is not retried.
"""

import dataclasses
import hashlib
import io
import os
import random
import tempfile
import time

import requests
from urllib3.exceptions import ReadTimeoutError

from rpcmq.fetch import image
from rpcmq.fetch.errors import (
    BadURL,
    DownloadFailed,
    ForbiddenAddress,
    TooLarge,
)
from rpcmq.fetch.guard import AddressGuard, Deadline, GuardedAdapter
from rpcmq.fetch.urls import MAX_URL_LENGTH, check_url, shown

__all__ = ['FetchOptions', 'FetchResult', 'Fetcher', 'download', 'url_sha1']

_OK = (200, 203)


def url_sha1(url):
    """sha1 hex of the URL exactly as given (UTF-8): the classic key."""
    return hashlib.sha1(url.encode('utf-8')).hexdigest()


@dataclasses.dataclass(frozen=True)
class FetchOptions:
    """Settings of a :class:`Fetcher`; see ``rpcmq.conf.image`` for each."""

    retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 10.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 300.0
    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 89478485
    formats: tuple = ('jpeg', 'png', 'webp', 'gif', 'bmp', 'tiff')
    max_redirects: int = 5
    max_url_length: int = MAX_URL_LENGTH
    allow_private_networks: bool = False
    allowed_networks: tuple = ()
    user_agent: str = 'rpcmq-fetch/0.1'
    chunk_size: int = 64 * 1024

    @classmethod
    def from_conf(cls, conf):
        """Options from the ``[image]`` group of a ConfigOpts."""
        g = conf.image
        return cls(
            retries=g.download_retries, backoff=g.download_backoff,
            backoff_max=g.download_backoff_max,
            connect_timeout=g.connect_timeout, read_timeout=g.read_timeout,
            total_timeout=g.total_timeout, max_bytes=g.max_image_bytes,
            max_pixels=g.max_image_pixels, formats=tuple(g.image_formats),
            max_redirects=g.max_redirects, max_url_length=g.max_url_length,
            allow_private_networks=g.allow_private_networks,
            allowed_networks=tuple(g.allowed_networks),
            user_agent=g.user_agent, chunk_size=g.chunk_size)


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """A downloaded, verified image: a file at ``path``, or, when the
    download was kept in memory (``memory_max``), ``data`` and no path."""

    path: str
    size: int
    sha256: str
    content_type: str
    format: str       # Pillow's name, lower case: 'jpeg', 'png', ...
    width: int
    height: int
    url: str          # as given by the caller
    url_sha1: str
    final_url: str    # after redirects
    attempts: int
    data: bytes = None

    @property
    def ext(self):
        """File extension of the format: 'jpg', 'png', 'webp', ..."""
        return image.extension(self.format)

    def as_dict(self):
        return dataclasses.asdict(self)


class _Retryable(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclasses.dataclass
class _Body:
    path: str
    size: int
    sha256: str
    content_type: str
    final_url: str
    data: bytes = None


@dataclasses.dataclass(frozen=True)
class _Sink:
    """Where an attempt puts the body."""

    dest_dir: str
    watcher: object = None
    memory_max: int = 0

    def in_memory(self, declared):
        return declared.isdigit() and int(declared) <= self.memory_max


class Fetcher:
    """Downloads images with one ``requests.Session`` and fixed options.

    Thread-safe for concurrent :meth:`download` calls. Environment proxy
    settings are ignored on the session it creates: through a proxy the
    address guard could not see where a download really goes. Its adapter
    is always a :class:`GuardedAdapter` (which lets every address through
    when ``allow_private_networks`` is set): it enforces total_timeout.
    """

    def __init__(self, options=None, session=None, sleep=time.sleep):
        self.options = opts = options or FetchOptions()
        self.guard = AddressGuard(opts.allowed_networks,
                                  opts.allow_private_networks)
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            session.trust_env = False
        adapter = GuardedAdapter(self.guard, pool_maxsize=32, max_retries=0)
        session.mount('http://', adapter)
        session.mount('https://', adapter)
        self.session = session
        self._sleep = sleep
        self._headers = {'User-Agent': opts.user_agent,
                         'Accept': 'image/*, */*;q=0.5',
                         'Accept-Encoding': 'identity'}

    @classmethod
    def from_conf(cls, conf, **kwargs):
        return cls(FetchOptions.from_conf(conf), **kwargs)

    def close(self):
        if self._own_session:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def download(self, url, dest_dir, name=None, watcher=None,
                 memory_max=0):
        """Download ``url`` into ``dest_dir``; return a :class:`FetchResult`.

        The file is named ``name``, or ``<sha1 of url>.<ext>``. A
        ``watcher`` hears of each attempt's temp file as it is written:
        ``begin(path, declared)`` once it is created (``declared``: the
        Content-Length, or None), then ``grew(size)`` each time ``size``
        bytes of it are on disk; a second ``begin`` means the first file
        was abandoned. Only the return of this method says the file is
        whole and verified. A body whose Content-Length is at most
        ``memory_max`` bytes is kept in memory (``data``) and never
        written to ``dest_dir`` (nor seen by the watcher).

        :raises BadURL, ForbiddenAddress, DownloadFailed, TooLarge,
            NotAnImage: see :mod:`rpcmq.fetch.errors`.
        """
        check_url(url, self.options.max_url_length)
        os.makedirs(dest_dir, exist_ok=True)
        attempt = 0
        while True:
            attempt += 1
            try:
                body = self._attempt(url, attempt,
                                     _Sink(dest_dir, watcher, memory_max))
                break
            except _Retryable as exc:
                if attempt > self.options.retries:
                    raise DownloadFailed(url=url, status=exc.status,
                                         attempts=attempt,
                                         reason=exc.reason) from None
            self._sleep(self.backoff(attempt))
        sha1 = url_sha1(url)
        path = None
        try:
            info = image.inspect(
                body.path if body.data is None else body.data, url,
                self.options.formats, self.options.max_pixels,
                body.content_type)
            if body.data is None:
                name = name or '%s.%s' % (sha1, image.extension(info.format))
                path = os.path.join(dest_dir, name)
                os.replace(body.path, path)
        except BaseException:
            if body.path is not None:
                _unlink(body.path)
            raise
        return FetchResult(
            path=path, size=body.size, sha256=body.sha256,
            content_type=body.content_type, format=info.format,
            width=info.width, height=info.height, url=url, url_sha1=sha1,
            final_url=body.final_url, attempts=attempt, data=body.data)

    def backoff(self, attempt):
        """Seconds to wait after failed attempt number ``attempt``."""
        opts = self.options
        base = min(opts.backoff_max, opts.backoff * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)

    def _attempt(self, url, attempt, sink):
        with Deadline(self.options.total_timeout) as deadline:
            return self._follow(url, attempt, deadline, sink)

    def _follow(self, url, attempt, deadline, sink):
        opts = self.options
        hop = url
        for _hop in range(opts.max_redirects + 1):
            with self._get(url, hop, attempt, deadline) as resp:
                if not resp.is_redirect:
                    self._check_status(url, resp, attempt)
                    return self._save(url, resp, attempt, deadline, sink)
                target = self.session.get_redirect_target(resp)
                hop = requests.compat.urljoin(hop, target)
                try:
                    check_url(hop, opts.max_url_length)
                except BadURL as exc:
                    # Permanent: the server sends every attempt there.
                    raise BadURL(
                        url=url, reason='it redirects (%d) to %r, which '
                        'cannot be downloaded: %s' % (
                            resp.status_code, shown(hop), exc.reason)
                    ) from None
        raise DownloadFailed(
            url=url, status=resp.status_code, attempts=attempt,
            reason='more than %d redirects (max_redirects)'
                   % opts.max_redirects)

    def _get(self, url, hop, attempt, deadline):
        opts = self.options
        try:
            return self.session.get(
                hop, stream=True, allow_redirects=False,
                headers=self._headers,
                timeout=(opts.connect_timeout, opts.read_timeout))
        except ForbiddenAddress as exc:
            reason = exc.reason
            if hop != url:
                reason = 'it redirects to %s and %s' % (hop, reason)
            raise ForbiddenAddress(url=url, address=exc.address,
                                   reason=reason) from None
        except requests.exceptions.InvalidURL as exc:
            # Refused by requests before any I/O: a host name IDNA refuses.
            reason = 'requests cannot send it: %s' % exc
            if hop != url:
                reason = 'it redirects to %r, which %s' % (
                    shown(hop), reason.replace('it', 'they', 1))
            raise BadURL(url=url, reason=reason) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            if deadline.expired:
                raise self._overtime(url, None, attempt, 'while waiting for '
                                     'the response of %s' % hop) from None
            if isinstance(exc, requests.exceptions.SSLError):
                raise DownloadFailed(url=url, status=None, attempts=attempt,
                                     reason='TLS failed: %s'
                                            % _reason(exc, opts)) from None
            raise _Retryable(None, _reason(exc, opts)) from None

    def _overtime(self, url, status, attempt, stage):
        return DownloadFailed(
            url=url, status=status, attempts=attempt,
            reason='it took longer than total_timeout (%ss) and was stopped '
                   '%s (not retried)' % (self.options.total_timeout, stage))

    def _check_status(self, url, resp, attempt):
        status = resp.status_code
        if status >= 500:
            raise _Retryable(status, 'the server answered %d %s'
                             % (status, resp.reason))
        if status not in _OK:
            raise DownloadFailed(
                url=url, status=status, attempts=attempt,
                reason='the server answered %d %s (not retried)'
                       % (status, resp.reason))

    def _save(self, url, resp, attempt, deadline, sink):
        opts = self.options
        declared = resp.headers.get('Content-Length', '')
        if declared.isdigit() and int(declared) > opts.max_bytes:
            raise TooLarge(
                '%s is too large: its Content-Length is %s bytes, over '
                'max_image_bytes (%d); raise [image] max_image_bytes if such '
                'images are expected' % (url, declared, opts.max_bytes),
                url=url, limit=opts.max_bytes, size=int(declared),
                unit='bytes')
        digest, size, data = hashlib.sha256(), 0, None
        watcher = None
        if sink.in_memory(declared):
            tmp, out = None, io.BytesIO()
        else:
            fd, tmp = tempfile.mkstemp(dir=sink.dest_dir, prefix='.part-')
            out = os.fdopen(fd, 'wb')
            watcher = sink.watcher
            if watcher is not None:
                watcher.begin(tmp, int(declared) if declared.isdigit()
                              else None)

        def overtime():
            return self._overtime(url, resp.status_code, attempt,
                                  'after writing %d bytes of the body'
                                  % size)

        try:
            with out as f:
                for chunk in resp.iter_content(opts.chunk_size):
                    size += len(chunk)
                    if size > opts.max_bytes:
                        raise TooLarge(
                            'stopped downloading %s after %d bytes: the body '
                            'is over max_image_bytes (%d) although the server '
                            'declared %s' % (url, size, opts.max_bytes,
                                             declared or 'no length'),
                            url=url, limit=opts.max_bytes, size=size,
                            unit='bytes')
                    if deadline.expired:
                        raise overtime()
                    digest.update(chunk)
                    f.write(chunk)
                    if watcher is not None:
                        f.flush()
                        watcher.grew(size)
                if tmp is None:
                    data = f.getvalue()
            if deadline.expired:
                # The watchdog may have ended a body without a length early.
                raise overtime()
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if tmp is not None:
                _unlink(tmp)
            if deadline.expired:
                raise overtime() from None
            raise _Retryable(resp.status_code, 'the body was cut after %d '
                             'bytes: %s' % (size, _reason(exc, opts))) \
                from None
        except BaseException:
            if tmp is not None:
                _unlink(tmp)
            raise
        return _Body(tmp, size, digest.hexdigest(),
                     resp.headers.get('Content-Type', ''), resp.url, data)


def download(url, dest_dir, conf=None, fetcher=None, name=None):
    """Download one image with ``fetcher``, or a Fetcher built from conf."""
    if fetcher is not None:
        return fetcher.download(url, dest_dir, name)
    with (Fetcher.from_conf(conf) if conf is not None else Fetcher()) as f:
        return f.download(url, dest_dir, name)


def _reason(exc, opts):
    if isinstance(exc, requests.ConnectTimeout):
        return 'no connection within %ss (connect_timeout)' % (
            opts.connect_timeout)
    inner = exc.args[0] if exc.args else exc
    inner = getattr(inner, 'reason', inner)  # urllib3 MaxRetryError
    if isinstance(exc, requests.ReadTimeout) or isinstance(
            inner, ReadTimeoutError):
        return 'no data for %ss (read_timeout)' % opts.read_timeout
    return '%s: %s' % (type(exc).__name__, inner)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
