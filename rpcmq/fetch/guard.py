"""Connection guard: downloads reach public addresses only, in time.

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

The adapter also enforces a :class:`Deadline`: a wall-clock limit on a
whole download, set for the code inside ``with Deadline(seconds):``.
Socket timeouts bound each read, not a server that drips a byte just
before every timeout, so a watchdog timer (an OS thread, or a green thread
under eventlet monkey-patching) shuts down the socket of the connection the
download holds when the deadline passes; the blocked read or write wakes up
with EOF or an error at once, whether it is in the headers, a redirect hop
or the body. Invariants:

- the pool lends a connection to the deadline of the download that takes
  it (``_get_conn``) and takes it back when it is returned (``_put_conn``):
  a deadline only ever shuts down a connection its download holds, never
  one back in the pool or lent to another download;
- the deadline keeps its own duplicate descriptor of the socket, so it can
  still shut it down after urllib3 wraps it in TLS (which detaches the
  original socket object) and it can never hit a reused descriptor number;
- attach, detach, expiry and stop hold one lock; a socket attached after
  the deadline passed is shut down at once, and no connection is opened
  after it (connect timeouts are cut to the time left).

Name resolution (``getaddrinfo``) cannot be interrupted: it is bounded by
the resolver's own timeouts, and the deadline is checked right after it.
"""

import contextvars
import ipaddress
import socket
import threading
import time

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
from rpcmq.fetch.errors import ForbiddenAddress
from rpcmq.fetch.urls import SCHEMES, check_url, redact

# check_url and SCHEMES live in rpcmq.fetch.urls; still importable here.
__all__ = ['AddressGuard', 'Deadline', 'GuardedAdapter', 'SCHEMES',
           'check_url']

# (test, reason) in the order reasons are reported.
_CHECKS = (
    ('is_unspecified', 'the unspecified address'),
    ('is_loopback', 'a loopback address'),
    ('is_link_local', 'a link-local address'),
    ('is_multicast', 'a multicast address'),
    ('is_reserved', 'a reserved address'),
    ('is_private', 'a private address'),
)


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


# The Deadline of the download running in this thread or green thread
# (greenlets each have their own context): the pool reads it when a
# download takes a connection.
_current = contextvars.ContextVar('rpcmq_fetch_deadline', default=None)


class Deadline:
    """A wall-clock limit of ``seconds`` on the downloads run inside
    ``with Deadline(seconds) as deadline:`` -- see the module docstring.

    ``expired`` tells whether it passed; after it has, reads and writes on
    the download's connection fail (or see EOF) and no new connection is
    opened, so the caller must check ``expired`` before trusting a body
    that ended early.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._fired = self._stopped = False
        self._dup = None    # our own descriptor of the watched socket
        self._timer = self._token = None

    def __enter__(self):
        self._timer = threading.Timer(self.remaining(), self.expire)
        self._timer.daemon = True
        self._timer.start()
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info):
        _current.reset(self._token)
        self.stop()

    @property
    def expired(self):
        return self._fired or time.monotonic() >= self._at

    def remaining(self):
        """Seconds left, 0 once expired."""
        return max(0.0, self._at - time.monotonic())

    def attach(self, sock):
        """Watch ``sock``, the socket the download now uses (replacing any
        other); shut it down at once if the deadline already passed."""
        with self._lock:
            self._close_dup()
            if self._stopped:
                return
            self._dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            if self._fired:
                _shutdown(self._dup)

    def detach(self):
        """Stop watching the socket: the download gave its connection
        back. Once this returns the deadline never touches it again."""
        with self._lock:
            self._close_dup()

    def expire(self):
        """The watchdog: mark the deadline passed and shut the watched
        socket down. Called by the timer (or a test)."""
        with self._lock:
            if self._stopped:
                return
            self._fired = True
            if self._dup is not None:
                _shutdown(self._dup)

    def stop(self):
        """End the watch: cancel the timer, let go of the socket."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._stopped = True
            self._close_dup()

    def _close_dup(self):
        dup, self._dup = self._dup, None
        if dup is not None:
            dup.close()


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass    # already disconnected


class _GuardedConnectionMixin:
    guard = None  # set on the subclasses GuardedAdapter builds
    deadline = None  # the Deadline of the download holding the connection

    def _new_conn(self):
        try:
            addresses = self.guard.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error = None
        for address in addresses:
            timeout = self._connect_timeout()
            try:
                sock = u3connection.create_connection(
                    (address, self.port), timeout,
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
            else:
                if self.deadline is not None:
                    self.deadline.attach(sock)
                return sock
        raise error

    def _connect_timeout(self):
        """connect_timeout, cut to the time left before the deadline."""
        timeout, deadline = self.timeout, self.deadline
        if deadline is None:
            return timeout
        left = deadline.remaining()
        if left <= 0:
            raise ConnectTimeoutError(
                self, 'total_timeout (%ss) passed before connecting to %s'
                % (deadline.seconds, self.host))
        return min(timeout, left) if isinstance(timeout, (int, float)) \
            else left


class _WatchedPoolMixin:
    """Lends each connection to the Deadline of the download taking it."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        conn.deadline = deadline = _current.get()
        if deadline is not None and conn.sock is not None:
            deadline.attach(conn.sock)   # a kept-alive connection
        return conn

    def _put_conn(self, conn):
        if conn is not None and conn.deadline is not None:
            conn.deadline.detach()
            conn.deadline = None
        super()._put_conn(conn)


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through ``guard`` and are
    watched by the :class:`Deadline` of the download using them.

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
            'http': type('GuardedHTTPConnectionPool',
                         (_WatchedPoolMixin, HTTPConnectionPool),
                         {'ConnectionCls': http_conn}),
            'https': type('GuardedHTTPSConnectionPool',
                          (_WatchedPoolMixin, HTTPSConnectionPool),
                          {'ConnectionCls': https_conn}),
        }
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # Through a proxy the guard would check the proxy, not the target.
        proxy = redact(proxy)   # proxy URLs often carry a password
        raise ForbiddenAddress(
            url=proxy, address=proxy,
            reason='downloads through a proxy bypass the address guard')
