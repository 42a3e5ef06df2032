"""RPC server: listener -> executor -> dispatcher -> reply.

Ordering and invariants:

* A call is acked on receipt, so it never runs twice; its reply (result or
  failure) goes to the default exchange with routing key ``reply_to`` and
  the request's ``correlation_id``.
* A cast is acked after its endpoint returns (at-least-once): a server that
  dies mid-cast leaves it to be redelivered.
* Bad input never kills the server or blocks the queue: it gets an error
  reply (calls) or a log line (casts) and is acked.
* ``stop()`` stops taking messages; work in flight finishes (up to
  ``graceful_shutdown_timeout``) before the connection closes, and casts
  that did not finish are requeued by the broker.
"""

import logging
import time

from rpcmq.exceptions import (
    MalformedMessage,
    MessageTooLarge,
    NoSuchMethod,
    RpcmqError,
    UnsupportedVersion,
)
from rpcmq.executors import get_executor
from rpcmq.rpc import wire
from rpcmq.rpc.dispatcher import ExpectedException, RPCDispatcher
from rpcmq.transport.listener import TopicListener

__all__ = ['RPCServer', 'get_rpc_server']

LOG = logging.getLogger(__name__)

REPLY_DEADLINE = 30.0
ACCEPTED_CONTENT_TYPES = (None, '', 'application/json', 'text/plain')
_CALLER_ERRORS = (NoSuchMethod, UnsupportedVersion, MalformedMessage,
                  MessageTooLarge, TypeError)


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
        self._listener = None

    def start(self, ready_timeout=10.0):
        """Start consuming; wait up to ``ready_timeout`` for the queues."""
        if self._listener is not None:
            return
        self._listener = TopicListener(
            self.transport.driver, self.target, self._on_incoming,
            prefetch=self.conf.rpc_prefetch_count, on_drain=self._drain)
        self._listener.start()
        if not self._listener.ready.wait(ready_timeout):
            LOG.warning('server %s: broker %s not reachable yet; it keeps '
                        'trying', self.target, self.transport.url)

    def stop(self):
        """Stop taking new messages (returns at once; see ``wait``)."""
        if self._listener is not None:
            self._listener.stop()

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
        is_call = bool(incoming.reply_to)
        if is_call:
            incoming.ack()
        try:
            msg = self._check(incoming)
        except RpcmqError as exc:
            LOG.warning('rejected %s from queue of %s: %s',
                        'call' if is_call else 'cast', self.target.topic, exc)
            if is_call:
                self._reply(incoming, wire.failure_reply(exc, tb=''))
            else:
                incoming.ack()
            return
        self.executor.submit(self._process, incoming, msg, is_call)

    def _check(self, incoming):
        limit = self.conf.max_message_size
        if len(incoming.body) > limit:
            raise MessageTooLarge(size=len(incoming.body), limit=limit)
        if incoming.content_type not in ACCEPTED_CONTENT_TYPES:
            raise MalformedMessage(reason='content type %r is not accepted; '
                                          'send application/json'
                                   % incoming.content_type)
        return wire.decode_request(incoming.body)

    def _process(self, incoming, msg, is_call):
        method = msg['method']
        try:
            result = self.dispatcher.dispatch(
                msg['context'], method, msg['args'], msg.get('namespace'),
                msg.get('version'))
        except ExpectedException as wrapped:
            LOG.debug('%s raised expected %r', method, wrapped.exc)
            reply = wire.failure_reply(wrapped.exc)
        except (RpcmqError,) + _CALLER_ERRORS as exc:
            # Typed errors are part of the contract: one line, no traceback.
            LOG.warning('%s: %s', method, exc)
            reply = wire.failure_reply(exc)
        except Exception as exc:
            LOG.exception('%s failed', method)
            reply = wire.failure_reply(exc)
        else:
            if not is_call:
                incoming.ack()
                return
            try:
                reply = wire.result_reply(result)
            except (TypeError, ValueError) as exc:
                reply = wire.failure_reply(TypeError(
                    '%s returned a value that is not JSON: %s'
                    % (method, exc)))
        if is_call:
            self._reply(incoming, reply)
        else:
            incoming.ack()

    def _reply(self, incoming, body):
        limit = self.conf.max_message_size
        if len(body) > limit:
            body = wire.failure_reply(MessageTooLarge(size=len(body),
                                                      limit=limit), tb='')
        try:
            self.transport.driver.reply(
                incoming.channel, body, incoming.reply_to,
                incoming.correlation_id, time.monotonic() + REPLY_DEADLINE)
        except RpcmqError as exc:
            LOG.error('could not send reply %s to %s: %s',
                      incoming.correlation_id, incoming.reply_to, exc)


def get_rpc_server(transport, target, endpoints, executor='threading',
                   executor_size=None):
    """Build an RPCServer; ``executor`` is ``threading`` or ``eventlet``."""
    return RPCServer(transport, target, endpoints, executor=executor,
                     executor_size=executor_size)
