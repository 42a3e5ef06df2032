"""Which URLs a download may request, and how a URL is shown in errors.

:func:`check_url` runs, before any I/O, on the URL a caller gives and on
every redirect target. It refuses, with :class:`BadURL` (permanent: the
same URL would be refused again):

- anything but an absolute ``http://`` or ``https://`` URL with a host;
- URLs with user info (``http://user:password@host/``): requests would
  send it to the server as ``Authorization: Basic``, and it would be
  echoed wherever the URL is shown;
- URLs longer than ``[image] max_url_length`` characters;
- host names a DNS resolver cannot take: over 253 characters, or with an
  empty label or one over 63 characters (non-ASCII labels measured in
  their ``xn--`` form).

Errors and logs show a URL through :func:`shown`: user info replaced by
``***`` (:func:`redact`) and cut to ``SHOWN_CHARS`` characters.
"""

import re
import urllib.parse

from rpcmq.fetch.errors import BadURL

__all__ = ['SCHEMES', 'MAX_URL_LENGTH', 'check_url', 'redact', 'shown']

SCHEMES = ('http', 'https')
MAX_URL_LENGTH = 8192
MAX_HOST_LENGTH = 253     # characters of a DNS name, without the root dot
MAX_LABEL_LENGTH = 63
SHOWN_CHARS = 100

# An optional scheme and slashes (any number, either way: browsers read
# 'http:/u:pw@h' and 'http:\\u:pw@h' as 'http://u:pw@h'), then the
# authority, up to the path, query or fragment. With no scheme, 'user:pw@h'
# reads as scheme 'user:': the password is still hidden.
_AUTHORITY = re.compile(r'(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]*)'
                        r'(?P<authority>[^/?#]*)')


def redact(url):
    """``url`` with any user info before the host replaced by ``***``:
    ``http://user:pw@host/`` -> ``http://***@host/``. Works on strings
    that do not parse as URLs too."""
    match = _AUTHORITY.match(url)
    authority = match.group('authority')
    if '@' not in authority:
        return url
    return '%s***@%s%s' % (match.group('head'), authority.rpartition('@')[2],
                           url[match.end():])


def shown(url, limit=SHOWN_CHARS):
    """``url`` as errors and logs show it: redacted, and cut to ``limit``
    characters followed by ``...`` if longer."""
    url = redact(url)
    return url if len(url) <= limit else url[:limit] + '...'


def check_url(url, max_length=MAX_URL_LENGTH):
    """Return ``urlsplit(url)`` if a download may request ``url``.

    :raises BadURL: otherwise, with the reason; its ``url`` field is
        ``shown(url)``.
    """
    if not isinstance(url, str):
        raise BadURL(url='', reason='the URL is a %s, not a string'
                                    % type(url).__name__)
    if not url.strip():
        raise BadURL(url=url, reason='the URL is empty')
    if len(url) > max_length:
        raise BadURL(url=shown(url), reason='it is %d characters long, over '
                     '[image] max_url_length (%d)' % (len(url), max_length))
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise BadURL(url=shown(url), reason='the URL contains spaces or '
                                            'control characters')
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise BadURL(url=shown(url),
                     reason='it does not parse: %s' % exc) from None
    if parts.scheme.lower() not in SCHEMES:
        reason = ('scheme %r is not supported' % parts.scheme
                  if parts.scheme else 'it has no scheme')
        raise BadURL(url=shown(url), reason=reason)
    if '@' in parts.netloc:
        raise BadURL(url=shown(url), reason='it has user info (a user name '
                     'or password before the host); credentials are never '
                     'sent with a download')
    if not parts.hostname:
        raise BadURL(url=shown(url), reason='it has no host')
    reason = host_refusal(parts.hostname)
    if reason is not None:
        raise BadURL(url=shown(url), reason=reason)
    return parts


def host_refusal(host):
    """Why DNS cannot resolve the name ``host``, or ``None``."""
    if host.startswith('[') or ':' in host:
        return None     # an IPv6 literal
    name = host[:-1] if host.endswith('.') else host
    labels = [_dns_label(label) for label in name.split('.')]
    length = len('.'.join(labels))
    if length > MAX_HOST_LENGTH:
        return ('its host name is %d characters long, over the %d a DNS '
                'name may have' % (length, MAX_HOST_LENGTH))
    if '' in labels:
        return 'its host name has an empty label (two dots in a row)'
    longest = max(labels, key=len)
    if len(longest) > MAX_LABEL_LENGTH:
        return ('its host name has a label of %d characters, over the %d a '
                'DNS label may have' % (len(longest), MAX_LABEL_LENGTH))
    return None


def _dns_label(label):
    """The label as DNS carries it: ASCII as is, else its ``xn--`` form."""
    if label.isascii():
        return label
    return 'xn--' + label.encode('punycode').decode('ascii')
