"""Kombu drivers: connections, publishing with reconnect, AMQP entities.

One class does the work for every broker kombu speaks; the subclasses say
which kombu transport to use and what it can do (publisher confirms, TLS,
heartbeats). Publishing goes through kombu's producer pools and
``Connection.ensure`` (via ``Producer.publish(retry=True)``); the only retry
bound we add is the caller's deadline.
"""

import logging
import time

import kombu
from kombu import pools

from rpcmq.exceptions import TransportError

__all__ = ['KombuDriver', 'RabbitDriver', 'RedisDriver', 'MemoryDriver']

LOG = logging.getLogger(__name__)

W_RECONNECT = 'broker %s unreachable (%s); retrying in %.1fs'
JSON = 'application/json'


class KombuDriver:
    """Publishing and consuming on one broker, for every rpcmq layer."""

    kombu_scheme = None
    default_vhost = None
    supports_confirms = False
    transport_options = {}

    def __init__(self, conf, url):
        self.conf = conf
        self.url = url
        rabbit = conf.rabbit
        self.retry_policy = {
            'interval_start': rabbit.rabbit_retry_interval,
            'interval_step': rabbit.rabbit_retry_backoff,
            'interval_max': rabbit.rabbit_interval_max,
            'max_retries': rabbit.rabbit_max_retries or None,
        }
        self._base = self._connection(self.transport_options)
        limit = rabbit.connection_pool_size
        self._producers = pools.ProducerPool(
            self._base.Pool(limit=limit), limit=limit)
        self._confirming = self._producers
        if self.supports_confirms and rabbit.publisher_confirms:
            confirm = self._connection(dict(self.transport_options,
                                            confirm_publish=True))
            self._confirming = pools.ProducerPool(
                confirm.Pool(limit=limit), limit=limit)

    def _connection(self, transport_options):
        return kombu.Connection(
            self.url.kombu_urls(self.kombu_scheme, self.default_vhost),
            failover_strategy='round-robin',
            transport_options=dict(transport_options),
            **self.connection_kwargs())

    def connection_kwargs(self):
        return {}

    # -- entities --------------------------------------------------------

    def exchange(self, name):
        return kombu.Exchange(name, type='topic', durable=True)

    def fanout_exchange(self, topic):
        return kombu.Exchange('%s_fanout' % topic, type='fanout',
                              durable=True)

    def topic_queue(self, exchange_name, routing_key):
        """The durable queue a topic's (or one server's) requests wait in.

        Its name equals its routing key, so a plain AMQP client can also
        publish to it through the default exchange.
        """
        return kombu.Queue(routing_key, self.exchange(exchange_name),
                           routing_key=routing_key, durable=True)

    def connection(self):
        """A new, unconnected kombu connection for a long-lived consumer."""
        return self._base.clone()

    # -- publishing ------------------------------------------------------

    def publish(self, body, exchange, routing_key, *, deadline=None,
                declare=(), confirm=False, **properties):
        """Publish ``body`` (bytes of JSON), reconnecting until ``deadline``.

        ``exchange`` is a kombu Exchange or '' for the default exchange.
        Raises TransportError once the deadline (``time.monotonic()``) has
        passed without the broker taking the message.
        """
        def errback(exc, interval):
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TransportError(reason='broker %s unreachable: %s' % (
                    self.url, exc)) from exc
            LOG.warning(W_RECONNECT, self.url, exc, interval)

        policy = dict(self.retry_policy, errback=errback)
        pool = self._confirming if confirm else self._producers
        try:
            with pool.acquire(block=True) as producer:
                producer.publish(
                    body, exchange=exchange, routing_key=routing_key,
                    serializer=None, content_type=JSON,
                    content_encoding='utf-8', declare=declare, retry=True,
                    retry_policy=policy, **properties)
        except TransportError:
            raise
        except self.recoverable_errors() as exc:
            raise TransportError(reason='publishing to %s failed: %s' % (
                self.url, exc)) from exc

    def recoverable_errors(self):
        return (self._base.connection_errors + self._base.channel_errors
                + (OSError,))

    def cleanup(self):
        for pool in {id(self._producers): self._producers,
                     id(self._confirming): self._confirming}.values():
            pool.connections.force_close_all()
            pool.force_close_all()


class RabbitDriver(KombuDriver):
    """RabbitMQ through py-amqp: confirms, heartbeats, TLS, failover."""

    kombu_scheme = 'pyamqp'
    default_vhost = '/'
    supports_confirms = True

    def connection_kwargs(self):
        rabbit = self.conf.rabbit
        kwargs = {'heartbeat': rabbit.heartbeat_timeout_threshold,
                  'connect_timeout': 5}
        if rabbit.ssl:
            import ssl
            ssl_opts = {'cert_reqs': ssl.CERT_REQUIRED}
            if rabbit.ssl_ca_file:
                ssl_opts['ca_certs'] = rabbit.ssl_ca_file
            if rabbit.ssl_cert_file:
                ssl_opts['certfile'] = rabbit.ssl_cert_file
            if rabbit.ssl_key_file:
                ssl_opts['keyfile'] = rabbit.ssl_key_file
            kwargs['ssl'] = ssl_opts
        return kwargs


class RedisDriver(KombuDriver):
    """Redis through kombu's virtual transport (lists and pub/sub)."""

    kombu_scheme = 'redis'
    transport_options = {'polling_interval': 0.01}


class MemoryDriver(KombuDriver):
    """In-process broker: every transport of the process shares it."""

    kombu_scheme = 'memory'
    transport_options = {'polling_interval': 0.002}
