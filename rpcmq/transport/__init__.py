"""Transports: a broker URL turned into a driver that rpc layers use."""

import logging
import threading

from stevedore import driver as sv_driver
from stevedore.exception import NoMatches

from rpcmq import conf as rpcmq_conf
from rpcmq.exceptions import ConfigError
from rpcmq.transport.reply import ReplyWaiter
from rpcmq.transport.url import parse_url

__all__ = ['Transport', 'get_transport']

LOG = logging.getLogger(__name__)

DRIVER_NAMESPACE = 'rpcmq.drivers'


class Transport:
    """A broker connection set shared by clients and servers of a process.

    Holds the driver (connections, producer pools) and, once a call is made,
    the single reply consumer of this transport.
    """

    def __init__(self, conf, driver, url):
        self.conf = conf
        self.driver = driver
        self.url = url
        self._replies = None
        self._lock = threading.Lock()

    @property
    def replies(self):
        if self._replies is None:
            with self._lock:
                if self._replies is None:
                    self._replies = ReplyWaiter(self.driver)
        return self._replies

    def flush(self, timeout=None):
        """Wait until the broker confirmed every cast sent so far; True if
        it has (always True where the broker has no confirms)."""
        return self.driver.flush(timeout)

    def cleanup(self):
        """Wait for outstanding cast confirms (up to 10 s), then close the
        reply consumer and every pooled connection."""
        if self._replies is not None:
            self._replies.close()
        self.driver.cleanup()

    def __repr__(self):
        return '<Transport %s>' % self.url


def get_transport(conf, url=None):
    """Return a Transport for ``url`` (default: ``conf.transport_url``).

    ``conf`` is an oslo.config ConfigOpts; rpcmq's options are registered on
    it if they are not already.
    """
    rpcmq_conf.register_opts(conf)
    url = parse_url(url or conf.transport_url)
    try:
        mgr = sv_driver.DriverManager(
            DRIVER_NAMESPACE, url.scheme, invoke_on_load=True,
            invoke_args=(conf, url))
    except NoMatches:
        raise ConfigError(reason='no transport driver for %r URLs; use '
                                 'rabbit://, amqp://, amqps:// (TLS), '
                                 'redis:// or memory://'
                                 % url.scheme) from None
    return Transport(conf, mgr.driver, url)
