"""Reliable, guarded image download and the local spool.

``Fetcher(FetchOptions(...))`` or ``Fetcher.from_conf(conf)`` downloads an
http(s) URL to a directory and returns a :class:`FetchResult`; failures
raise the typed errors of :mod:`rpcmq.fetch.errors`.
"""

from rpcmq.fetch.download import (
    Fetcher,
    FetchOptions,
    FetchResult,
    download,
    url_sha1,
)
from rpcmq.fetch.errors import (
    BadURL,
    DownloadFailed,
    FetchError,
    ForbiddenAddress,
    NotAnImage,
    SpoolNotFound,
    TooLarge,
)
from rpcmq.fetch.guard import AddressGuard
from rpcmq.fetch.image import extension
from rpcmq.fetch.spool import Spool

__all__ = ['FetchOptions', 'FetchResult', 'Fetcher', 'download', 'url_sha1',
           'FetchError', 'BadURL', 'DownloadFailed', 'ForbiddenAddress',
           'NotAnImage', 'SpoolNotFound', 'TooLarge', 'AddressGuard',
           'extension', 'Spool']
