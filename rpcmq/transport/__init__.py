"""Transports: a broker URL turned into the two verbs rpc layers use.

``Transport.send`` publishes a request to a Target (waiting for its reply
or not); ``Transport.listen`` consumes a Target's queues. How a Target maps
onto exchanges, queues and routing keys, which connection carries what,
reconnecting and retrying (kombu's, paced by ``[rabbit]``) all stay below
this line; the rpc layer sees bytes, Targets and rpcmq errors.
"""

import json
import logging
import threading
import time

from stevedore import driver as sv_driver
from stevedore.exception import NoMatches

from rpcmq import conf as rpcmq_conf
from rpcmq.exceptions import ConfigError, MessagingTimeout, Unauthenticated
from rpcmq.security.signing import Keyring
from rpcmq.transport import deadline as call_deadline
from rpcmq.transport.listener import TopicListener
from rpcmq.transport.reply import LOST, ReplyWaiter
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
        self.keyring = Keyring.from_conf(conf)
        self._replies = None
        self._lock = threading.Lock()

    @property
    def replies(self):
        if self._replies is None:
            with self._lock:
                if self._replies is None:
                    self._replies = ReplyWaiter(self.driver)
        return self._replies

    # -- the two verbs ----------------------------------------------------

    def send(self, target, body, timeout, wait_for_reply=False,
             headers=None, method=None, correlation_id=None):
        """Publish request ``body`` (JSON bytes) to ``target``.

        Without ``wait_for_reply`` (a cast): returns once the broker has the
        message (persistent; on RabbitMQ confirmed in the background, see
        ``flush``). With it (a call): returns the reply body, or raises
        MessagingTimeout when none came within ``timeout`` seconds. Either
        way TransportError (BrokerUnreachable, AuthenticationError,
        BrokerRefused) if it could not be sent within ``timeout``.
        ``method`` only names the call in error messages;
        ``correlation_id`` is the call's if the body names it already (see
        ``reply_address``).
        """
        exchange, routing_key, declare = self._route(target)
        deadline = time.monotonic() + timeout
        headers = dict(headers or ())
        if not wait_for_reply:
            headers.update(self._sign(exchange, routing_key, body, None,
                                      headers))
            self.driver.publish(body, exchange, routing_key, declare=declare,
                                confirm=True, delivery_mode=2,
                                headers=headers, deadline=deadline)
            return None
        replies = self.replies
        replies.ensure_started(timeout)  # or the TransportError saying why
        cid, slot = replies.register(correlation_id)
        signed = self._sign(exchange, routing_key, body, cid, headers)
        headers.update(signed)
        try:
            if replies.direct:
                self.driver.declare(declare, deadline)
                replies.publish(body, exchange, routing_key, deadline, slot,
                                correlation_id=cid, expiration=timeout,
                                headers=headers)
            else:
                self.driver.publish(
                    body, exchange, routing_key, declare=declare,
                    reply_to=replies.queue_name, correlation_id=cid,
                    expiration=timeout, headers=headers, deadline=deadline)
        except BaseException:
            replies.forget(cid)
            raise
        reply = replies.wait_reply(cid, slot,
                                   max(0.0, deadline - time.monotonic()))
        if reply is None:
            raise MessagingTimeout(method=method, target=repr(target),
                                   timeout=timeout)
        if reply is LOST:
            raise MessagingTimeout(
                'the connection to %s that would carry the reply to %s was '
                'lost; the call may or may not have run'
                % (self.url, method), method=method, target=repr(target),
                timeout=timeout)
        if signed:
            self._check_reply(reply, slot.headers, cid, method)
        return reply

    def _sign(self, exchange, routing_key, body, correlation_id, headers):
        return self.keyring.sign(
            'request', getattr(exchange, 'name', exchange), routing_key,
            body, correlation_id, headers.get(call_deadline.HEADER))

    def _check_reply(self, body, headers, correlation_id, method):
        """The reply to a signed call must be signed by a known key; an
        unsigned one is only let through when it is the server's refusal
        (the server cannot sign with a key it does not trust)."""
        try:
            self.keyring.verify('reply', headers, '', '', body,
                                correlation_id)
        except Unauthenticated as exc:
            if self.keyring.is_signed(headers) or not _is_refusal(body):
                raise Unauthenticated(reason='reply to %s: %s' % (
                    method, exc.kwargs.get('reason', exc))) from None

    @property
    def reply_address(self):
        """The queue this transport's calls get their replies on, for a
        body that must name it (oslo.messaging's ``_reply_q``)."""
        return self.replies.queue_name

    def listen(self, target, handler, prefetch, on_drain=None):
        """Consume ``target``'s queues in a background thread, calling
        ``handler(IncomingMessage)`` for each request; at most ``prefetch``
        unsettled at once. Returns the started listener (``wait_ready``,
        ``stop``, ``wait``)."""
        listener = TopicListener(self.driver, target, handler,
                                 prefetch=prefetch, on_drain=on_drain)
        listener.start()
        return listener

    def _route(self, target):
        """(exchange entity, routing key, entities to declare)."""
        driver = self.driver
        if target.fanout:
            exchange = driver.fanout_exchange(target.topic)
            return exchange, target.topic, (exchange,)
        name = target.exchange or self.conf.control_exchange
        exchange = driver.exchange(name)
        if target.server:
            return exchange, '%s.%s' % (target.topic, target.server), \
                (exchange,)
        # Declaring the shared queue lets casts wait for the first server.
        return exchange, target.topic, (driver.topic_queue(name,
                                                           target.topic),)

    def dead_letters(self, timeout=15.0):
        """The broker's dead-letter queues (``DeadLetters``: count, peek,
        replay, purge); ConfigError where the broker keeps none."""
        from rpcmq.transport.deadletters import DeadLetters
        return DeadLetters(self.driver, timeout)

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


def _is_refusal(body):
    """True if ``body`` is a failure reply of type Unauthenticated."""
    try:
        failure = json.loads(body).get('failure')
        return failure.get('type') == 'Unauthenticated' and \
            failure.get('module') == 'rpcmq.exceptions'
    except (ValueError, AttributeError, RecursionError):
        return False


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
