"""RPC client: call (wait for the reply), cast (fire and forget), prepare.

Routing: requests go to the Target's exchange (default
``control_exchange``, a topic exchange) with routing key ``topic`` (any
server of the topic) or ``topic.server`` (that server); fanout casts go to
the ``topic_fanout`` exchange. See docs/wire-format.md. With
``oslo_compat`` requests travel in oslo.messaging's envelope, which its
servers and rpcmq's both take (``oslowire``).
"""

import time
import uuid

from rpcmq.exceptions import InvalidTarget, MessageTooLarge, MessagingTimeout
from rpcmq.observe import metrics, trace
from rpcmq.rpc import oslowire, wire
from rpcmq.rpc.dispatcher import version_is_compatible
from rpcmq.target import Target
from rpcmq.transport import deadline as call_deadline

__all__ = ['RPCClient', 'get_rpc_client']

_UNSET = object()
_TARGET_FIELDS = ('exchange', 'topic', 'server', 'namespace', 'version',
                  'fanout')


def _context_dict(ctxt):
    if ctxt is None:
        return {}
    if isinstance(ctxt, dict):
        return ctxt
    to_dict = getattr(ctxt, 'to_dict', None)
    if to_dict is None:
        raise TypeError('context must be a dict or have to_dict(), got %s'
                        % type(ctxt).__name__)
    return to_dict()


class RPCClient:
    """Sends requests to a Target over a Transport.

    ``timeout`` is the default for ``call`` (falls back to
    ``rpc_response_timeout``); ``version_cap`` refuses to send a newer
    version than the server side is known to implement.
    """

    def __init__(self, transport, target, timeout=None, version_cap=None):
        if not isinstance(target, Target):
            raise TypeError('target must be an rpcmq.Target')
        self.transport = transport
        self.conf = transport.conf
        self.target = target
        self.timeout = timeout
        self.version_cap = version_cap

    def prepare(self, timeout=_UNSET, version_cap=_UNSET, **target_fields):
        """A client with some Target fields or the timeout overridden."""
        unknown = set(target_fields) - set(_TARGET_FIELDS)
        if unknown:
            raise TypeError('prepare() got unknown arguments %s'
                            % sorted(unknown))
        return RPCClient(
            self.transport, self.target(**target_fields),
            timeout=self.timeout if timeout is _UNSET else timeout,
            version_cap=(self.version_cap if version_cap is _UNSET
                         else version_cap))

    def can_send_version(self, version):
        """True if ``version`` is within ``version_cap`` (or no cap)."""
        return self.version_cap is None or version_is_compatible(
            self.version_cap, version)

    # -- building and routing ---------------------------------------------

    def _message(self, ctxt, method, kwargs, call=None):
        """The request's body; ``call``: the msg_id of a call in
        oslo.messaging's envelope."""
        target = self.target
        if not target.topic:
            raise InvalidTarget(target=target, reason='a topic is required')
        if target.version and not self.can_send_version(target.version):
            raise InvalidTarget(target=target, reason='version %s exceeds '
                                'version_cap %s' % (target.version,
                                                    self.version_cap))
        msg = {'method': method, 'args': kwargs,
               'context': _context_dict(ctxt)}
        if target.namespace is not None:
            msg['namespace'] = target.namespace
        if target.version is not None:
            msg['version'] = target.version
        if not self.conf.oslo_compat:
            body = wire.encode(msg)
        elif call is None:
            body = oslowire.encode_request(msg)
        else:
            body = oslowire.encode_request(msg, call,
                                           self.transport.reply_address)
        limit = self.conf.max_message_size
        if len(body) > limit:
            raise MessageTooLarge(size=len(body), limit=limit)
        return body

    def _allowed_exmods(self):
        """Read only for a failure: oslo.config's option lookup cost 2% of
        a client's CPU per call."""
        return self.conf.allowed_remote_exmods

    def _timeout(self):
        if self.timeout is not None:
            return self.timeout
        return self.conf.rpc_response_timeout

    # -- sending ----------------------------------------------------------

    def cast(self, ctxt, method, **kwargs):
        """Send without waiting for a result.

        Returns once the message is written to the broker; raises
        TransportError if it could not be within the client's timeout. On
        RabbitMQ casts are persistent and confirmed by the broker in the
        background: one it refuses, or that a lost connection leaves
        unconfirmed, is published again. ``transport.flush()`` waits for
        every confirm; ``transport.cleanup()`` does so before closing.
        """
        body = self._message(ctxt, method, kwargs)
        with trace.sending(_context_dict(ctxt), self.target.topic, method,
                           wait=False) as headers:
            self.transport.send(self.target, body, self._timeout(),
                                headers=headers)

    def call(self, ctxt, method, **kwargs):
        """Send and wait for the reply; return its result.

        Raises MessagingTimeout when the broker took the request and no
        reply came within the timeout (the request expires on the broker
        then, and a server that gets it after its deadline drops it, so it
        is not run late); TransportError (BrokerUnreachable,
        AuthenticationError, BrokerRefused) when the request could not be
        sent within the timeout; or the remote exception, rebuilt as its
        own type where allowed.
        """
        if self.target.fanout:
            raise InvalidTarget(target=self.target,
                                reason='call cannot be fanned out; use cast')
        timeout = self._timeout()
        msg_id = uuid.uuid4().hex if self.conf.oslo_compat else None
        body = self._message(ctxt, method, kwargs, call=msg_id)
        started, outcome = time.monotonic(), 'transport_error'
        try:
            # The server drops a call whose deadline passed before it
            # could start it (docs/wire-format.md); the broker drops it on
            # expiration.
            with trace.sending(_context_dict(ctxt), self.target.topic,
                               method, wait=True) as headers:
                headers.update(call_deadline.headers_for(timeout))
                reply = self.transport.send(
                    self.target, body, timeout, wait_for_reply=True,
                    headers=headers, method=method, correlation_id=msg_id)
            outcome = 'remote_error'
            if msg_id is not None:
                result = oslowire.decode_reply(reply, self._allowed_exmods)
            else:
                result = wire.decode_reply(reply, self._allowed_exmods)
            outcome = 'ok'
            return result
        except MessagingTimeout:
            outcome = 'timeout'
            raise
        finally:
            metrics.series(metrics.CALL_SECONDS, self.target.topic or '',
                           method, outcome).observe(
                               time.monotonic() - started)


def get_rpc_client(transport, target, **kwargs):
    return RPCClient(transport, target, **kwargs)
