"""RPC server: listener -> executor -> dispatcher -> reply.

Ordering and invariants:

* The thread that reads the broker's socket only hands each message to the
  executor (which never blocks), so heartbeats, acks and replies keep
  flowing however long endpoints run.
* Back-pressure lives in the broker: the server asks for at most as many
  unacked messages per queue as it has workers (prefetch = executor
  size), and
  settles every message when its work is done. Requests it cannot start
  yet stay queued in the broker, where their expiration still applies and
  other servers of the topic can take them.
* A call is acked once its reply (result or failure) is sent; the reply
  goes to the default exchange with routing key ``reply_to`` and the
  request's ``correlation_id``. A call runs at most once: one the broker
  delivers again (``redelivered``: the server that took it died or lost
  its connection) is answered with ``CallInterrupted``, not run.
* A call whose deadline (``x-rpcmq-deadline``) has passed when a worker
  picks it up is dropped with one INFO line and no reply: its caller has
  given up.
* A cast is acked after its endpoint returns (at-least-once): a server
  that dies mid-cast leaves it to be redelivered, at most
  ``[rabbit] max_deliveries`` times in all; then it is parked in the
  topic's dead-letter queue (``transport/deliveries.py``).
* One message costs only itself: whatever decoding, checking, dispatching
  or replying raises, that message gets an error reply (calls) or a log
  line (casts) and is settled; the listener goes on.
* ``stop()`` stops taking messages; work in flight finishes (up to
  ``graceful_shutdown_timeout``) before the connection closes, and casts
  that did not finish are requeued by the broker.
"""

import logging
import time

from rpcmq.exceptions import (
    CallInterrupted,
    InternalError,
    InvalidArguments,
    MalformedMessage,
    MessageTooLarge,
    MethodDisabled,
    NoSuchMethod,
    RpcmqError,
    TransportError,
    Unauthenticated,
    UnsupportedVersion,
)
from rpcmq.executors import get_executor
from rpcmq.observe import metrics, trace
from rpcmq.observe.logs import log_context
from rpcmq.rpc import oslowire, wire
from rpcmq.rpc.dispatcher import ExpectedException, RPCDispatcher
from rpcmq.transport import deadline

__all__ = ['RPCServer', 'get_rpc_server']

LOG = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = (None, '', 'application/json', 'text/plain')
#: Errors that mean the request was not one the server could run.
_REJECTED = (NoSuchMethod, UnsupportedVersion, InvalidArguments,
             MethodDisabled)
#: The method label of requests that name no method of this server.
UNKNOWN = '<unknown>'


class RPCServer:
    """Serves ``endpoints`` on ``target`` (topic, optional server name)."""

    def __init__(self, transport, target, endpoints, executor='threading',
                 executor_size=None):
        if not target.topic:
            raise ValueError('an RPC server needs a Target with a topic')
        self.transport = transport
        self.conf = transport.conf
        self.target = target
        self.dispatcher = RPCDispatcher(endpoints)
        self.executor = get_executor(
            executor, executor_size or self.conf.executor_thread_pool_size)
        self._oslo = oslowire.OsloRequests(
            target.topic, self.conf.max_message_size) \
            if self.conf.oslo_compat else None
        self._listener = None
        self._span = ('%s process' % target.topic, 'server')  # a trace's
        self._span_attributes = {'messaging.system': 'rabbitmq',
                                 'messaging.destination.name': target.topic}
        metrics.watch_executor(self.executor, target.topic)

    def start(self, ready_timeout=10.0):
        """Start consuming; wait up to ``ready_timeout`` for the queues.

        Raises AuthenticationError or BrokerRefused (the login or a queue
        declaration was refused) as soon as the broker says so; a broker
        that is only unreachable is retried in the background. Returns True
        if the server is consuming.
        """
        if self._listener is not None:
            return self._listener.ready.is_set()
        self._listener = self.transport.listen(
            self.target, self._on_incoming, prefetch=self.executor.size,
            on_drain=self._drain)
        try:
            ready = self._listener.wait_ready(ready_timeout)
        except TransportError:
            self.stop()
            self._listener = None
            raise
        if not ready:
            LOG.warning('server %s: %s; it keeps trying', self.target,
                        self._listener.unreachable(
                            'within %ss' % ready_timeout))
        return ready

    def stop(self):
        """Stop taking new messages (returns at once; see ``wait``)."""
        if self._listener is not None:
            self._listener.stop()

    def health(self):
        """None while consuming; else what is wrong, in words."""
        if self._listener is None:
            return 'server %s not started' % self.target.topic
        return self._listener.problem()

    def wait(self, timeout=None):
        """Block until the server has stopped and in-flight work is done."""
        if self._listener is None:
            return True
        return self._listener.wait(timeout)

    def _drain(self):
        timeout = self.conf.graceful_shutdown_timeout
        if not self.executor.shutdown(timeout):
            LOG.warning('server %s: work still running after %ss; '
                        'unfinished casts will be redelivered', self.target,
                        timeout)

    # -- one message ------------------------------------------------------

    def _on_incoming(self, incoming):
        """On the listener's thread: hand over, never wait."""
        self.executor.submit(self._process, incoming)

    def _process(self, incoming):
        """On a worker: handle one message; whatever happens, settle it."""
        parent = (incoming.headers or {}).get(trace.HEADER)
        with trace.handling(parent, *self._span, log_fields={
                'topic': self.target.topic,
                'correlation_id': incoming.correlation_id},
                **self._span_attributes):
            self._settle(incoming)

    def _settle(self, incoming):
        message, is_call = incoming, False
        try:
            if self._oslo is not None:  # oslo.messaging's requests too
                incoming = self._oslo.adapt(incoming)
                if incoming is None:
                    return  # a duplicate, or refused: logged
            is_call = bool(incoming.reply_to)
            if not is_call and not incoming.admit():
                # delivered too often: parked (see deliveries)
                metrics.DROPPED.labels(self.target.topic,
                                       'dead_lettered').inc()
                return
            self._handle(incoming, is_call)
        except Exception as exc:
            LOG.exception('server %s: unexpected error on a %s (correlation '
                          'id %s)', self.target.topic,
                          'call' if is_call else 'cast',
                          incoming.correlation_id)
            if is_call:
                self._reply(incoming, '?', wire.failure_reply(
                    InternalError(reason='%s: %s' % (type(exc).__name__,
                                                     exc)), tb=''))
        finally:
            message.ack()

    def _handle(self, incoming, is_call):
        key = None
        try:
            key = self._authenticate(incoming)  # before decoding anything
            msg = self._check(incoming)
            if key is not None and not key.allows(self.target.topic,
                                                  msg['method']):
                raise Unauthenticated(reason='the key %s may not call %s on '
                                             '%s' % (key.key_id,
                                                     msg['method'],
                                                     self.target.topic))
        except RpcmqError as exc:
            LOG.warning('rejected %s (correlation id %s) from queue of %s: '
                        '%s', 'call' if is_call else 'cast',
                        incoming.correlation_id, self.target.topic, exc)
            self._count(UNKNOWN, _kind(is_call), 'rejected', 0.0)
            if is_call:
                self._reply(incoming, '?', wire.failure_reply(exc, tb=''),
                            key)
            else:
                incoming.refuse('%s: %s' % (type(exc).__name__, exc))
                metrics.DROPPED.labels(self.target.topic, 'refused').inc()
            return
        method = msg['method']
        tp = trace.current()
        if tp is not None and isinstance(msg['context'], dict):
            msg['context'].setdefault(trace.HEADER, tp)
        with log_context(method=method):
            if is_call and self._not_to_run(incoming, method, key):
                return
            with oslowire.monitored(incoming):
                reply = self._dispatch(msg, method, is_call)
            if is_call:
                self._reply(incoming, method, reply, key)

    def _authenticate(self, incoming):
        """The Key that signed this request (None: unsigned and allowed);
        Unauthenticated if it must be signed and is not, or is signed
        wrongly. A signed request is always checked."""
        keyring = self.transport.keyring
        if not keyring.require_signed and \
                not keyring.is_signed(incoming.headers):
            return None
        return keyring.verify(
            'request', incoming.headers, incoming.exchange,
            incoming.routing_key, incoming.body, incoming.correlation_id,
            (incoming.headers or {}).get(deadline.HEADER),
            topic=self.target.topic)

    def _check(self, incoming):
        limit = self.conf.max_message_size
        if len(incoming.body) > limit:
            raise MessageTooLarge(size=len(incoming.body), limit=limit)
        if incoming.content_type not in ACCEPTED_CONTENT_TYPES:
            raise MalformedMessage(reason='content type %r is not accepted; '
                                          'send application/json'
                                   % incoming.content_type)
        if isinstance(incoming, oslowire.OsloRequest):
            return incoming.decoded
        return wire.decode_request(incoming.body)

    def _not_to_run(self, incoming, method, key):
        """True (and answered or logged) for a call that must not run."""
        late = deadline.expired_by(incoming.headers)
        if late is not None and late >= 0:
            LOG.info('dropped call %s (correlation id %s) on %s: its '
                     'deadline passed %.1fs ago, its caller has given up',
                     method, incoming.correlation_id, self.target.topic, late)
            metrics.DROPPED.labels(self.target.topic, 'expired').inc()
            return True
        if incoming.redelivered:
            LOG.warning('call %s (correlation id %s) was delivered again '
                        'after the server that took it went away; answering '
                        'CallInterrupted instead of running it twice',
                        method, incoming.correlation_id)
            self._reply(incoming, method, wire.failure_reply(
                CallInterrupted(method=method), tb=''), key)
            metrics.DROPPED.labels(self.target.topic, 'interrupted').inc()
            return True
        return False

    def _dispatch(self, msg, method, is_call):
        """Run the endpoint; the encoded reply (None for a cast)."""
        started, label, outcome = time.monotonic(), method, 'error'
        try:
            result = self.dispatcher.dispatch(
                msg['context'], method, msg['args'], msg.get('namespace'),
                msg.get('version'))
            outcome = 'ok'
        except ExpectedException as wrapped:
            LOG.debug('%s raised expected %r', method, wrapped.exc)
            outcome = 'expected'
            return self._failure(wrapped.exc)
        except RpcmqError as exc:
            # Typed errors are part of the contract: one line, no traceback.
            LOG.warning('%s: %s', method, exc)
            if isinstance(exc, _REJECTED):
                outcome = 'rejected'
                if isinstance(exc, NoSuchMethod):
                    label = UNKNOWN  # whatever a caller sent: unbounded
            return self._failure(exc)
        except Exception as exc:
            # Including a TypeError from inside the method: the arguments
            # were bound already (InvalidArguments), so it is a bug there.
            LOG.exception('%s failed', method)
            return self._failure(exc)
        finally:
            self._count(label, _kind(is_call), outcome,
                        time.monotonic() - started)
        if not is_call:
            return None
        try:
            return wire.result_reply(result)
        except (TypeError, ValueError) as exc:
            return self._failure(TypeError(
                '%s returned a value that is not JSON: %s' % (method, exc)))

    def _count(self, method, kind, outcome, seconds):
        """Record one request in the metrics."""
        topic = self.target.topic
        metrics.series(metrics.REQUESTS, topic, method, kind, outcome).inc()
        if outcome != 'rejected':
            metrics.series(metrics.REQUEST_SECONDS, topic, method).observe(
                seconds)

    def _failure(self, exc):
        """The failure reply; the traceback text only with
        ``debug_tracebacks`` (the server log has it anyway)."""
        return wire.failure_reply(
            exc, tb=None if self.conf.debug_tracebacks else '')

    def _reply(self, incoming, method, body, key=None):
        limit = self.conf.max_message_size
        if len(body) > limit:
            body = wire.failure_reply(MessageTooLarge(size=len(body),
                                                      limit=limit), tb='')
        if isinstance(incoming, oslowire.OsloRequest):
            body = incoming.reply_body(body)  # what goes out is signed
        headers = None if key is None else self.transport.keyring.sign(
            'reply', '', '', body, incoming.correlation_id, key=key)
        try:
            incoming.reply(body, headers)
        except Exception as exc:
            LOG.error('could not send the reply to %s (correlation id %s) '
                      'to %s: %s', method, incoming.correlation_id,
                      incoming.reply_to, exc)


def _kind(is_call):
    return 'call' if is_call else 'cast'


def get_rpc_server(transport, target, endpoints, executor='threading',
                   executor_size=None):
    """Build an RPCServer; ``executor`` is ``threading`` or ``eventlet``."""
    return RPCServer(transport, target, endpoints, executor=executor,
                     executor_size=executor_size)
