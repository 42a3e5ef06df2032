"""Errors of image download and spooling.

Every field is a JSON-able keyword argument kept on ``err.kwargs`` so the
error crosses the wire and is rebuilt on the caller as
``type(err)(err.message, **err.kwargs)``.
"""

from rpcmq.exceptions import RpcmqError

__all__ = ['FetchError', 'BadURL', 'ForbiddenAddress', 'DownloadFailed',
           'TooLarge', 'NotAnImage', 'SpoolNotFound']


class FetchError(RpcmqError):
    """Base of every download and spool error."""

    msg_fmt = 'could not fetch %(url)s'


class BadURL(FetchError, ValueError):
    """The URL, or a redirect target, may not be downloaded: not an
    http(s) URL with a host, user info before the host, longer than
    ``max_url_length``, or a host name DNS cannot take (see
    :mod:`rpcmq.fetch.urls`). Permanent: never retried.

    ``url`` is the URL with any user info replaced by ``***`` and cut to
    100 characters (the URL given, uncut, when a redirect is refused)."""

    msg_fmt = ('cannot download %(url)r: %(reason)s; give an absolute '
               'http:// or https:// URL')


class ForbiddenAddress(FetchError):
    """The URL, or a redirect, leads to a non-public address."""

    msg_fmt = ('refusing to download %(url)s: %(reason)s; list the network '
               'in [image] allowed_networks or set allow_private_networks '
               'if this server may fetch from it')


class DownloadFailed(FetchError):
    """The server did not deliver the body (status, network, redirects).

    ``status`` is the last HTTP status seen, or ``None`` when no response
    arrived; ``attempts`` counts the requests made, retries included.
    """

    msg_fmt = 'downloading %(url)s failed after %(attempts)s attempt(s): ' \
              '%(reason)s'


class TooLarge(FetchError):
    """The body (``unit='bytes'``) or the picture (``'pixels'``) is over
    its limit. ``size`` is the declared or measured size, or, when the
    download was cut at the limit, the bytes seen so far."""

    msg_fmt = ('%(url)s is too large: %(size)s %(unit)s, the limit is '
               '%(limit)s %(unit)s')


class NotAnImage(FetchError):
    """The body is not a picture in one of the accepted formats."""

    msg_fmt = ('%(url)s is not an image in an accepted format: it is '
               '%(found)s')


class SpoolNotFound(FetchError, LookupError):
    """No spooled file with this id on this server."""

    msg_fmt = ('spool id %(spool_id)r is not on server %(server)s '
               '(%(reason)s); send store() to the server named in the fetch '
               'handle before spool_ttl runs out, or fetch the URL again')

    def __init__(self, message=None, spool_id=None, server=None,
                 reason='no such spooled file', **kwargs):
        super().__init__(message, spool_id=spool_id, server=server,
                         reason=reason, **kwargs)
