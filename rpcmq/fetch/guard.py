"""Address guard: downloads reach public addresses only.

A caller who can make a server download any URL could otherwise make it
reach internal services (cloud metadata at 169.254.169.254, admin ports on
127.0.0.1, the office network). The guard works where the connection is
made: the host is resolved once, *every* resolved address is checked, and
the socket connects only to those checked addresses -- so a refused address
is never connected to, every redirect hop is checked when its connection
opens, and a DNS answer cannot change between check and connect.

``AddressGuard(allowed_networks=[...])`` lets chosen non-public networks
through (e.g. ``127.0.0.1/32`` in tests while ``10.0.0.0/8`` stays refused).
``GuardedAdapter(guard)`` is a requests transport adapter that applies it;
mount it for ``http://`` and ``https://`` on a ``requests.Session``.
"""

import ipaddress
import socket
import urllib.parse

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util import connection as u3connection

from rpcmq.exceptions import ConfigError
from rpcmq.fetch.errors import BadURL, ForbiddenAddress

__all__ = ['AddressGuard', 'GuardedAdapter', 'check_url']

SCHEMES = ('http', 'https')

# (test, reason) in the order reasons are reported.
_CHECKS = (
    ('is_unspecified', 'the unspecified address'),
    ('is_loopback', 'a loopback address'),
    ('is_link_local', 'a link-local address'),
    ('is_multicast', 'a multicast address'),
    ('is_reserved', 'a reserved address'),
    ('is_private', 'a private address'),
)


def check_url(url):
    """Return ``urlsplit(url)`` if it is an absolute http(s) URL with a host.

    :raises BadURL: otherwise, with the reason.
    """
    if not isinstance(url, str) or not url.strip():
        raise BadURL(url=repr(url), reason='the URL is empty or not a string')
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise BadURL(url=url, reason='the URL contains spaces or control '
                                     'characters')
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise BadURL(url=url, reason='it does not parse: %s' % exc) from None
    if parts.scheme.lower() not in SCHEMES:
        reason = ('scheme %r is not supported' % parts.scheme
                  if parts.scheme else 'it has no scheme')
        raise BadURL(url=url, reason=reason)
    if not parts.hostname:
        raise BadURL(url=url, reason='it has no host')
    return parts


def _parse_networks(networks):
    parsed = []
    for net in networks or ():
        try:
            parsed.append(ipaddress.ip_network(net.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(reason='[image] allowed_networks: %s' % exc)
    return tuple(parsed)


class AddressGuard:
    """Decides which resolved addresses a download may connect to.

    :param allowed_networks: CIDR strings let through although not public.
    :param allow_private: let every address through (no checks).
    """

    def __init__(self, allowed_networks=(), allow_private=False):
        self.allowed_networks = _parse_networks(allowed_networks)
        self.allow_private = bool(allow_private)

    def refusal(self, address):
        """Why ``address`` (a string) is refused, or ``None`` if allowed."""
        ip = ipaddress.ip_address(address.split('%', 1)[0])
        if self.allow_private:
            return None
        if any(ip.version == net.version and ip in net
               for net in self.allowed_networks):
            return None
        mapped = getattr(ip, 'ipv4_mapped', None)
        if mapped is not None:
            ip = mapped
        for attr, reason in _CHECKS:
            if getattr(ip, attr):
                return reason
        if not ip.is_global:
            return 'not a globally routable address'
        return None

    def resolve(self, host, port):
        """Resolve ``host`` and return its addresses, all checked.

        :raises socket.gaierror: the name does not resolve.
        :raises ForbiddenAddress: any address is refused (``url`` is the
            host; the fetcher re-raises it with the URL).
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = sockaddr[0]
            reason = self.refusal(address)
            if reason is not None:
                where = ('%s is' % address if host.strip('[]') == address
                         else '%s resolves to %s,' % (host, address))
                raise ForbiddenAddress(url=host, address=address,
                                       reason='%s %s' % (where, reason))
            if address not in addresses:
                addresses.append(address)
        return addresses


class _GuardedConnectionMixin:
    guard = None  # set on the subclasses GuardedAdapter builds

    def _new_conn(self):
        try:
            addresses = self.guard.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error = None
        for address in addresses:
            try:
                return u3connection.create_connection(
                    (address, self.port), self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options)
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, 'Connection to %s (%s) timed out. (connect '
                    'timeout=%s)' % (self.host, address, self.timeout))
                error.__cause__ = exc
            except OSError as exc:
                error = NewConnectionError(
                    self, 'Failed to establish a new connection to %s: %s'
                    % (address, exc))
                error.__cause__ = exc
        raise error


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through ``guard``.

    A refused address raises :class:`ForbiddenAddress` out of
    ``session.get`` before any connection is attempted.
    """

    def __init__(self, guard, **kwargs):
        self.guard = guard
        attrs = {'guard': guard}
        http_conn = type('GuardedHTTPConnection',
                         (_GuardedConnectionMixin, HTTPConnection), attrs)
        https_conn = type('GuardedHTTPSConnection',
                          (_GuardedConnectionMixin, HTTPSConnection), attrs)
        self._pool_classes = {
            'http': type('GuardedHTTPConnectionPool', (HTTPConnectionPool,),
                         {'ConnectionCls': http_conn}),
            'https': type('GuardedHTTPSConnectionPool',
                          (HTTPSConnectionPool,),
                          {'ConnectionCls': https_conn}),
        }
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # Through a proxy the guard would check the proxy, not the target.
        raise ForbiddenAddress(
            url=proxy, address=proxy,
            reason='downloads through a proxy bypass the address guard')
