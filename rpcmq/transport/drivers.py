"""Kombu drivers: connections, publishing with reconnect, AMQP entities.

One class does the work for every broker kombu speaks; the subclasses say
which kombu transport to use and what it can do (publisher confirms, TLS,
heartbeats). Publishing goes through kombu's producer pools and
``Connection.ensure`` (via ``Producer.publish(retry=True)``); the only retry
bound we add is the caller's deadline.
"""

import functools
import logging
import socket
import time
import weakref

import kombu
import kombu.exceptions
from kombu import pools
from kombu.utils.functional import retry_over_time

from rpcmq.transport import errors
from rpcmq.transport.confirms import Confirmed, ConfirmingPublisher
from rpcmq.transport.replier import Replier

__all__ = ['KombuDriver', 'RedisDriver', 'MemoryDriver']

LOG = logging.getLogger(__name__)

W_RECONNECT = 'broker %s unreachable (%s); retrying in %.1fs'
JSON = 'application/json'


# Entities are immutable descriptions, the same for every driver; building
# them is not free, so each is made once per name.

@functools.lru_cache(maxsize=1024)
def _topic_exchange(name, durable):
    return kombu.Exchange(name, type='topic', durable=durable)


@functools.lru_cache(maxsize=1024)
def _fanout_exchange(topic, oslo):
    # oslo.messaging's are transient and go with their last queue.
    return kombu.Exchange('%s_fanout' % topic, type='fanout',
                          durable=not oslo, auto_delete=oslo)


@functools.lru_cache(maxsize=4096)
def _topic_queue(exchange_name, routing_key, queue_type, durable):
    return kombu.Queue(routing_key, _topic_exchange(exchange_name, durable),
                       routing_key=routing_key, durable=durable,
                       queue_arguments=_queue_arguments(queue_type))


@functools.lru_cache(maxsize=1024)
def _dead_letter_queue(topic, queue_type):
    # Reached through the default exchange (its name is the routing key).
    return kombu.Queue(dead_letter_queue_name(topic), durable=True,
                       queue_arguments=_queue_arguments(queue_type))


def _queue_arguments(queue_type):
    return {'x-queue-type': queue_type} if queue_type == 'quorum' else None


def dead_letter_queue_name(topic):
    """Where casts of ``topic`` that cannot run again are parked."""
    return '%s_dead' % topic


def _key(entity):
    return entity.__class__.__name__, entity.name


class KombuDriver:
    """Publishing and consuming on one broker, for every rpcmq layer."""

    kombu_scheme = None
    default_vhost = None
    supports_confirms = False
    direct_reply_to = False
    raw_channels = False
    # A caller waiting for its reply may read the reply connection itself
    # (a socket it can block on: one thread wake-up per call instead of
    # two; see reply.py). Polling transports poll either way.
    callers_read = False
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
        self._declared = weakref.WeakKeyDictionary()
        self._declared_once = set()
        limit = rabbit.connection_pool_size
        self._producers = pools.ProducerPool(
            self._base.Pool(limit=limit), limit=limit)
        self._replier = Replier(self) if self.raw_channels else None
        self._confirmer = None
        if self.supports_confirms and rabbit.publisher_confirms:
            self._confirmer = ConfirmingPublisher(
                self, window=rabbit.confirm_window)
        #: oslo.messaging's topology (oslo_compat): topic exchanges and
        #: queues durable only as its options say, transient fanouts.
        self.oslo = conf.oslo_compat
        self.durable = not self.oslo or self.queue_type == 'quorum' or \
            rabbit.amqp_durable_queues

    def _connection(self, transport_options):
        urls = self.url.kombu_urls(self.kombu_scheme, self.default_vhost)
        # Opening a pooled connection tries each host once; the retries
        # with backoff are publish()'s, bounded by the caller's deadline.
        options = dict(transport_options, max_retries=len(urls) - 1,
                       interval_start=0, interval_step=0)
        return kombu.Connection(urls, failover_strategy='round-robin',
                                transport_options=options,
                                **self.connection_kwargs())

    def connection_kwargs(self):
        return {}

    # -- entities --------------------------------------------------------

    def exchange(self, name):
        return _topic_exchange(name, self.durable)

    def fanout_exchange(self, topic):
        return _fanout_exchange(topic, self.oslo)

    queue_type = 'classic'  # of durable request queues
    delivery_limits = False  # counts deliveries, parks dead letters

    def topic_queue(self, exchange_name, routing_key):
        """The queue a topic's (or one server's) requests wait in (durable
        unless oslo_compat's options say otherwise).

        Its name equals its routing key, so a plain AMQP client can also
        publish to it through the default exchange.
        """
        return _topic_queue(exchange_name, routing_key, self.queue_type,
                            self.durable)

    def durable_queue_arguments(self):
        """Arguments of the durable queues rpcmq declares (queue_type)."""
        return _queue_arguments(self.queue_type)

    def dead_letter_queue(self, topic):
        """The durable queue ``<topic>_dead`` (same type as the topic's)."""
        return _dead_letter_queue(topic, self.queue_type)

    def broker_connected(self, conn):
        """Called with each new consumer connection; may refuse (raise
        BrokerRefused) a broker that cannot hold what we declare."""

    def connection(self):
        """A new, unconnected kombu connection for a long-lived consumer."""
        return self._base.clone()

    def settle_consumers(self, connection):
        """Make sure the broker knows of every consumer on ``connection``
        before it reports ready (AMQP: basic.consume-ok already said so).
        """

    # -- publishing ------------------------------------------------------

    def publish(self, body, exchange, routing_key, *, deadline=None,
                declare=(), confirm=False, **properties):
        """Publish ``body`` (bytes of JSON), reconnecting until ``deadline``.

        ``exchange`` is a kombu Exchange or '' for the default exchange.
        Connection failures are retried with the configured backoff
        (kombu's ``retry_over_time``); once the deadline
        (``time.monotonic()``) would pass, TransportError says why.
        """
        if confirm and self._confirmer is not None:
            return self._confirmer.publish(body, exchange, routing_key,
                                           declare=declare,
                                           deadline=deadline, **properties)
        pool = self._producers
        missing = []

        def attempt():
            with pool.acquire(block=True) as producer:
                try:
                    self._send(producer, body, exchange, routing_key,
                               declare, properties)
                except self.recoverable_errors() as exc:
                    # The pooled connection is dead (or the broker closed
                    # the channel): reconnect on next use, to a broker that
                    # may have lost our entities.
                    producer.connection.collect()
                    self.forget_declarations()
                    self._give_up_if_permanent(exc, missing)
                    raise

        self._retry(attempt, deadline)

    def publish_many(self, messages, *, deadline=None, confirm=False):
        """``publish`` each ``(body, exchange, routing_key, declare,
        properties)`` in order; with publisher confirms, written together
        (one socket write where the connection allows). Returns a receipt
        (``confirms.Receipt``): its ``wait(timeout)`` says when the broker
        confirmed them all (at once where it has no confirms)."""
        if confirm and self._confirmer is not None:
            return self._confirmer.publish_many(messages, deadline)
        for body, exchange, routing_key, declare, properties in messages:
            self.publish(body, exchange, routing_key, deadline=deadline,
                         declare=declare, confirm=confirm, **properties)
        return Confirmed()

    def _give_up_if_permanent(self, exc, missing):
        """Raise the TransportError for a failure retrying cannot mend.

        A 404 (exchange gone) is retried once, after declaring again; a
        second one, a 403/406 or a refused login is raised at once.
        """
        if errors.is_missing_entity(exc) and not missing:
            missing.append(exc)
            return
        if errors.is_permanent(exc):
            raise errors.classify(exc, self.url) from exc

    def retry_or_give_up(self, exc, interval, deadline):
        """Log a retry in ``interval`` seconds, or raise TransportError if
        that would pass ``deadline`` (``time.monotonic()``; None: never)."""
        permanent = errors.is_permanent(exc) and \
            not errors.is_missing_entity(exc)  # 404: declared again first
        if permanent or (
                deadline is not None and
                time.monotonic() + interval > deadline):
            raise errors.classify(exc, self.url) from exc
        LOG.warning(W_RECONNECT, self.url, exc, interval)

    def ensure_connection(self, conn, errback):
        """Connect ``conn``, retrying with the [rabbit] backoff options;
        ``errback(exc, interval)`` runs before each wait and may raise."""
        policy = self.retry_policy
        try:
            conn.ensure_connection(errback, policy['max_retries'],
                                   interval_start=policy['interval_start'],
                                   interval_step=policy['interval_step'],
                                   interval_max=policy['interval_max'])
        except self.recoverable_errors() as exc:
            # A refused login (not retried by kombu), or retries ran out.
            raise errors.classify(exc, self.url) from exc
        return conn

    def _retry(self, attempt, deadline):
        """Run ``attempt`` until it succeeds or ``deadline`` would pass."""
        def errback(exc, intervals, retries):
            interval = next(intervals)
            self.retry_or_give_up(exc, interval, deadline)
            return interval

        policy = self.retry_policy
        try:
            retry_over_time(attempt, self.recoverable_errors(),
                            errback=errback,
                            max_retries=policy['max_retries'],
                            interval_start=policy['interval_start'],
                            interval_step=policy['interval_step'],
                            interval_max=policy['interval_max'])
        except self.recoverable_errors() as exc:
            # rabbit_max_retries ran out: the last error, in our words.
            raise errors.classify(exc, self.url) from exc

    def _send(self, producer, body, exchange, routing_key, declare,
              properties):
        """Declare what this channel has not declared yet, then publish.

        kombu's own ``declare=`` binds a copy of every entity on every
        publish; remembering what each channel declared avoids that. A new
        channel (after a reconnect) declares again. (kombu's maybe_declare
        is not used: its cache lives as long as the kombu Connection, so
        it would not declare again after ``forget_declarations``.)
        """
        channel = producer.channel
        done = self._declared.get(channel)
        if done is None:
            done = self._declared[channel] = set()
        for entity in declare:
            if _key(entity) not in done:
                entity.declare(channel=channel)
                done.add(_key(entity))
        producer.publish(body, exchange=exchange, routing_key=routing_key,
                         serializer=None, content_type=JSON,
                         content_encoding='utf-8', **properties)

    def recoverable_errors(self):
        return (self._base.connection_errors + self._base.channel_errors
                + (OSError, kombu.exceptions.OperationalError))

    def reply(self, channel, body, reply_to, correlation_id, deadline,
              headers=None, gather=False):
        """Send a reply; on RabbitMQ on the reply connection (``Replier``),
        never the one the request came on (``channel`` is ignored).
        ``gather``: other replies are about to be sent, write together."""
        if self._replier is None:
            return self.publish(body, '', reply_to,
                                correlation_id=correlation_id,
                                headers=headers, deadline=deadline)
        self._replier.send(body, reply_to, deadline, gather=gather,
                           correlation_id=correlation_id, headers=headers)

    def declare(self, entities, deadline=None):
        """Declare entities not declared yet by this driver, on a pooled
        connection. Durable entities outlive reconnects, so once is enough
        until ``forget_declarations``.
        """
        todo = {_key(e): e for e in entities}
        for key in self._declared_once.intersection(todo):
            del todo[key]
        if not todo:
            return
        todo = list(todo.values())

        def attempt():
            with self._producers.acquire(block=True) as producer:
                try:
                    for entity in todo:
                        entity.declare(channel=producer.channel)
                except self.recoverable_errors():
                    # A refusal closed the channel; retry_or_give_up raises
                    # a permanent one at once.
                    producer.connection.collect()
                    raise
        self._retry(attempt, deadline)
        self._declared_once.update(_key(e) for e in todo)

    def forget_declarations(self):
        """Declare everything again before its next use: a connection was
        lost or a channel closed, and the broker may have been reset or
        had our exchanges and queues deleted meanwhile."""
        self._declared_once = set()
        self._declared = weakref.WeakKeyDictionary()

    def flush(self, timeout=None):
        """Wait until the broker confirmed every cast; True if it has."""
        if self._confirmer is None:
            return True
        return self._confirmer.flush(timeout)

    def cleanup(self):
        if self._replier is not None:
            self._replier.close()
        if self._confirmer is not None:
            self._confirmer.close()
        self._producers.connections.force_close_all()
        self._producers.force_close_all()


class RedisDriver(KombuDriver):
    """Redis through kombu's virtual transport (lists and pub/sub)."""

    kombu_scheme = 'redis'
    transport_options = {'polling_interval': 0.01}

    def settle_consumers(self, connection):
        # kombu SUBSCRIBEs fanout queues on its first poll; a fanout cast
        # published before that would be lost (pub/sub keeps nothing).
        try:
            connection.drain_events(timeout=0)
        except socket.timeout:
            pass


class MemoryDriver(KombuDriver):
    """In-process broker: every transport of the process shares it."""

    kombu_scheme = 'memory'
    transport_options = {'polling_interval': 0.002}
