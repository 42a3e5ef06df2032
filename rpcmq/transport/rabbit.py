"""The RabbitMQ driver: py-amqp with read-ahead, publisher confirms,
heartbeats, TLS and failover; quorum request queues need RabbitMQ 3.10."""

import logging
import os

from rpcmq.exceptions import BrokerRefused, ConfigError
from rpcmq.transport import amqp
from rpcmq.transport.drivers import KombuDriver

__all__ = ['RabbitDriver']

LOG = logging.getLogger(__name__)


class RabbitDriver(KombuDriver):
    """RabbitMQ through py-amqp: confirms, heartbeats, TLS, failover.

    ``amqps://`` URLs are TLS whatever ``[rabbit] ssl`` says.
    """

    kombu_scheme = amqp.SCHEME  # py-amqp with read-ahead
    default_vhost = '/'
    supports_confirms = True
    raw_channels = True
    callers_read = True
    delivery_limits = True

    def __init__(self, conf, url):
        self.queue_type = conf.rabbit.queue_type
        super().__init__(conf, url)
        self._seen_brokers = set()

    def broker_connected(self, conn):
        info = conn.connection.server_properties or {}
        version = _text(info.get('version')) or 'unknown'
        # Not as_uri(): that shows kombu's scheme for our transport class
        # (rpcmqamqp://), which is no URL a user wrote or could use.
        host = '%s:%s' % (conn.hostname, conn.port)
        if host not in self._seen_brokers:
            self._seen_brokers.add(host)
            LOG.info('connected to %s %s at %s; request queues are %s',
                     _text(info.get('product')) or 'broker', version, host,
                     self.queue_type)
        if self.queue_type == 'quorum' and _version(version) < (3, 10):
            raise BrokerRefused(
                url=str(self.url), what='quorum queues', code=0,
                reason='RabbitMQ %s at %s cannot hold them with message '
                       'expiry (3.10 or later can); set [rabbit] queue_type '
                       '= classic or upgrade the broker' % (version, host))

    @property
    def direct_reply_to(self):
        # oslo.messaging's servers reply to the queue named in the body,
        # which a direct reply-to address cannot be known in advance.
        return self.conf.rabbit.direct_reply_to and not self.oslo

    def connection_kwargs(self):
        rabbit = self.conf.rabbit
        kwargs = {'heartbeat': rabbit.heartbeat_timeout_threshold,
                  'connect_timeout': 5}
        if rabbit.ssl or self.url.scheme == 'amqps':
            kwargs['ssl'] = self._ssl_options(rabbit)  # port 5671 if unset
        return kwargs

    @staticmethod
    def _ssl_options(rabbit):
        import ssl
        opts = {'cert_reqs': ssl.CERT_REQUIRED}
        for option, key in (('ssl_ca_file', 'ca_certs'),
                            ('ssl_cert_file', 'certfile'),
                            ('ssl_key_file', 'keyfile')):
            path = getattr(rabbit, option)
            if not path:
                continue
            if not os.path.isfile(path):
                raise ConfigError(reason='[rabbit] %s: no such file %s'
                                  % (option, path))
            opts[key] = path
        if rabbit.ssl_key_file and not rabbit.ssl_cert_file:
            raise ConfigError(reason='[rabbit] ssl_key_file is set but '
                                     'ssl_cert_file is not')
        if rabbit.ssl_verify_hostname:
            opts['server_hostname'] = None  # amqp.Connection names the host
        return opts


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) \
        else value


def _version(text):
    """(3, 10, 8) from '3.10.8'; (0,) where it cannot be read (an unknown
    broker is given the benefit of the doubt only by being refused)."""
    parts = []
    for part in str(text).split('.'):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts) or (0,)
