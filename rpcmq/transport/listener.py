"""Server side of a topic: consume its queues, hand messages on.

A listener consumes three queues for a Target: the topic's shared queue
(any server), the ``topic.server`` queue (this server alone) and an
exclusive queue bound to the ``topic_fanout`` exchange. It runs kombu's
``ConsumerMixin`` loop in a thread (a green thread under eventlet), so
connection loss, reconnect with backoff and re-declaring the queues are
kombu's. Messages are acked by whoever finishes them, from any thread;
acks that come together are written together (``acks``).

Each queue's consumer has its own prefetch, equal to the server's number
of workers: the broker hands it at most that many unacked messages from
the shared topic queue, so requests a busy server cannot start wait in the
broker, where other servers can take them. (Messages for this server
alone, or fanned out, count against the same workers: while those keep
every worker busy, up to ``prefetch`` requests from the shared queue may
wait in the server; they are still dropped there if their deadline
passes.)
"""

import functools
import logging
import time
import uuid

import kombu

from rpcmq.transport import deliveries
from rpcmq.transport.acks import Acks
from rpcmq.transport.consuming import Consumer

__all__ = ['IncomingMessage', 'TopicListener']

LOG = logging.getLogger(__name__)

REPLY_DEADLINE = 30.0  # seconds a reply may wait for a lost connection


class IncomingMessage:
    """A request as it came off the broker, with ways to settle it."""

    __slots__ = ('body', 'properties', '_message', '_driver', '_source',
                 '_settled', '_acks')

    def __init__(self, message, driver, source=None, acks=None):
        self._message = message
        self._driver = driver
        self._source = source  # a deliveries.Source: a durable queue
        self._settled = False
        self._acks = acks  # the listener's Acks, which knows this delivery
        if acks is not None:
            acks.delivered(message.channel, message.delivery_tag)
        self.body = message.body
        self.properties = message.properties

    @property
    def reply_to(self):
        return self.properties.get('reply_to')

    @property
    def correlation_id(self):
        return self.properties.get('correlation_id')

    @property
    def headers(self):
        return self._message.headers

    @property
    def redelivered(self):
        """True if the broker delivered this message before (to a consumer
        that did not settle it)."""
        return bool(self._message.delivery_info.get('redelivered'))

    @property
    def exchange(self):
        """The exchange the request was published to ('' the default)."""
        return self._message.delivery_info.get('exchange') or ''

    @property
    def routing_key(self):
        return self._message.delivery_info.get('routing_key') or ''

    @property
    def content_type(self):
        return self._message.content_type

    def reply(self, body, headers=None, to=None, correlation_id=None):
        """Send ``body`` to this call's ``reply_to`` (or ``to``) through
        the default exchange (on RabbitMQ on the driver's reply connection,
        not the one the request came on; raises TransportError)."""
        self._driver.reply(self._message.channel, body, to or self.reply_to,
                           correlation_id or self.correlation_id,
                           time.monotonic() + REPLY_DEADLINE, headers,
                           gather=self._acks is not None and
                           self._acks.others_running())

    def admit(self):
        """For a cast, before running it: True if it may run. False if it
        was delivered ``[rabbit] max_deliveries`` times without being
        settled (it is parked in the dead-letter queue) or must first go
        to the tail of its classic queue to be counted; either way it is
        settled (see ``deliveries``)."""
        if self._source is None or self._settled:
            return not self._settled
        if deliveries.admit(self._driver, self._message, self._source,
                            self._driver.conf.rabbit.max_deliveries):
            return True
        self._settled_otherwise()
        return False

    def refuse(self, reason):
        """A cast the server will not run (malformed, unsigned...): parked
        with ``reason`` when ``[rabbit] dead_letter_malformed`` is set,
        else dropped when acked."""
        if self._source is not None and not self._settled and \
                self._driver.conf.rabbit.dead_letter_malformed:
            deliveries.park(self._driver, self._message, self._source,
                            'malformed', reason)
            self._settled_otherwise()

    def ack(self):
        if self._settled:
            return
        self._settled = True
        try:
            if self._acks is None:
                self._message.ack()
            else:
                self._acks.ack(self._message.channel,
                               self._message.delivery_tag)
        except Exception as exc:  # connection gone: the broker redelivers
            LOG.warning('could not ack message %s: %s', self.correlation_id,
                        exc)

    def requeue(self):
        self._settle_by(self._message.requeue, 'requeue')

    def reject(self):
        """Drop it (the broker discards a rejected message)."""
        self._settle_by(self._message.reject, 'reject')

    def _settle_by(self, frame, verb):
        """Settle with ``frame`` (requeue, reject) unless settled already;
        a connection that is gone only costs a warning (the broker
        redelivers what was not settled)."""
        if self._settled:
            return
        try:
            frame()
        except Exception as exc:
            LOG.warning('could not %s message %s: %s', verb,
                        self.correlation_id, exc)
        self._settled_otherwise()

    def _settled_otherwise(self):
        """Settled by a frame other than an ack, already written."""
        self._settled = True
        if self._acks is not None:
            self._acks.settled(self._message.channel,
                               self._message.delivery_tag)


class TopicListener(Consumer):
    """Consume a Target's queues; call ``handler(IncomingMessage)``.

    ``on_drain`` runs after consuming stops and before the connection
    closes, so work in flight can still ack; whatever it leaves unacked is
    requeued by the broker when the connection closes.
    """

    def __init__(self, driver, target, handler, prefetch, on_drain=None):
        super().__init__(driver)
        self.target = target
        self.name = 'listener %s' % target.topic
        self._handler = handler
        self._prefetch = prefetch
        self._on_drain = on_drain
        self._fanout_name = '%s_fanout_%s' % (target.topic, uuid.uuid4().hex)
        self._acks = Acks()

    def queues(self):
        exchange = self.target.exchange or self.driver.conf.control_exchange
        topic, server = self.target.topic, self.target.server
        queues = [self.driver.topic_queue(exchange, topic)]
        if server:
            queues.append(self.driver.topic_queue(
                exchange, '%s.%s' % (topic, server)))
        queues.append(kombu.Queue(
            self._fanout_name, self.driver.fanout_exchange(topic),
            routing_key=topic, exclusive=True, auto_delete=True,
            durable=False))
        return queues

    def get_consumers(self, Consumer, channel):
        # Per-consumer prefetch (RabbitMQ's global QoS costs a round of
        # coordination per delivery, and quorum queues refuse it). One
        # consumer per queue, so each message knows which queue it left.
        consumers = []
        for queue in self.queues():
            source = None
            if queue.durable and self.driver.delivery_limits:
                source = deliveries.Source(queue, self.target.topic)
            consumers.append(Consumer(
                queues=[queue], prefetch_count=self._prefetch, no_ack=False,
                on_message=functools.partial(self._on_message,
                                             source=source)))
        return consumers

    def on_consume_end(self, connection, channel):
        if self.should_stop and self._on_drain is not None:
            self._on_drain()

    def _on_message(self, message, source=None):
        incoming = IncomingMessage(message, self.driver, source, self._acks)
        try:
            self._handler(incoming)
        except Exception:
            # The handler only hands the message on; if even that fails,
            # this message is dropped, not the listener.
            LOG.exception('%s: could not take message %s; rejecting it',
                          self.name, message.properties.get('correlation_id'))
            incoming.reject()

    def start(self):
        self.start_thread()
