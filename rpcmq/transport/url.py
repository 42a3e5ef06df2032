"""Transport URLs: ``rabbit://user:pass@host1:5672,host2:5672/vhost``.

A URL names a driver by its scheme and may list several hosts; the kombu
driver tries them in order (failover). Credentials may differ per host.
"""

import dataclasses
from urllib.parse import quote, unquote, urlsplit

from rpcmq.exceptions import ConfigError

__all__ = ['TransportURL', 'parse_url']


@dataclasses.dataclass(frozen=True)
class Host:
    hostname: str
    port: int | None = None
    username: str | None = None
    password: str | None = None


@dataclasses.dataclass(frozen=True)
class TransportURL:
    scheme: str
    hosts: tuple
    virtual_host: str | None
    query: str = ''

    def kombu_urls(self, kombu_scheme, default_vhost=None):
        """One kombu URL per host, for ``kombu.Connection`` failover."""
        vhost = self.virtual_host
        if vhost is None:
            vhost = default_vhost
        vhost = '/' + quote(vhost, safe='') if vhost is not None else '/'
        urls = []
        for host in self.hosts or (Host('localhost'),):
            auth = ''
            if host.username is not None:
                auth = quote(host.username, safe='')
                if host.password is not None:
                    auth += ':' + quote(host.password, safe='')
                auth += '@'
            netloc = host.hostname
            if ':' in netloc:
                netloc = '[%s]' % netloc
            if host.port:
                netloc += ':%d' % host.port
            urls.append('%s://%s%s%s' % (kombu_scheme, auth, netloc, vhost))
        return urls

    def __str__(self):
        """The URL with passwords masked, safe for logs."""
        hosts = ','.join('%s%s%s' % (
            (h.username + ':****@') if h.username else '',
            h.hostname, ':%d' % h.port if h.port else '') for h in self.hosts)
        return '%s://%s/%s' % (self.scheme, hosts, self.virtual_host or '')


def _parse_host(netloc):
    userinfo, _, hostport = netloc.rpartition('@')
    username = password = None
    if userinfo:
        username, has_pw, pw = userinfo.partition(':')
        username = unquote(username)
        password = unquote(pw) if has_pw else None
    port = None
    if hostport.startswith('['):
        host, _, rest = hostport[1:].partition(']')
        if rest.startswith(':') and rest[1:]:
            port = rest[1:]
    else:
        host, _, port = hostport.partition(':')
        port = port or None
    if port is not None:
        try:
            port = int(port)
        except ValueError:
            raise ConfigError(reason='port %r in transport_url is not a '
                                     'number' % port) from None
    return Host(host, port, username, password)


def parse_url(url):
    """Parse a transport URL; raise ConfigError with the reason if bad."""
    if not url or '://' not in url:
        raise ConfigError(reason='transport_url %r has no scheme; expected '
                                 'e.g. rabbit://guest:guest@127.0.0.1:5672/'
                                 % (url,))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    hosts = tuple(_parse_host(n) for n in parts.netloc.split(',') if n)
    path = parts.path[1:] if parts.path.startswith('/') else parts.path
    vhost = unquote(path) if path else None
    return TransportURL(scheme, hosts, vhost, parts.query)
