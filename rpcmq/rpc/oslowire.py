"""oslo.messaging's wire, spoken by servers with ``oslo_compat``.

oslo.messaging's rabbit driver wraps every message as ``{"oslo.version":
"2.0", "oslo.message": "<JSON text>"}``. A request's inner message holds
``method``, ``args``, ``namespace`` and ``version`` (absent: "1.0"), the
caller's context as one ``_context_<key>`` entry per key, and, for a call,
``_msg_id`` and ``_reply_q``: the caller's reply queue, reached through
the default exchange. ``_unique_id`` lets a server drop a message it was
sent twice. The reply is the same envelope around ``{"result",
"failure", "ending": true, "_msg_id", "_unique_id"}``, where ``failure``
is the JSON text of ``{"class", "module", "message", "tb": [lines],
"args", "kwargs"}``.

``OsloRequests.adapt`` turns an incoming message that holds such a request
into an ``OsloRequest``: to the server it looks like any call or cast
(``reply_to`` is ``_reply_q``, ``correlation_id`` is ``_msg_id``), and
what the server replies, in rpcmq's form, leaves in oslo.messaging's.
Clients with ``oslo_compat`` send ``encode_request``'s envelopes, which
oslo.messaging's servers and rpcmq's both take, and read replies with
``decode_reply``.
"""

import collections
import contextlib
import json
import logging
import re
import threading
import uuid

from rpcmq.exceptions import MalformedMessage, MessageTooLarge
from rpcmq.rpc import wire

__all__ = ['OsloRequests', 'OsloRequest', 'is_envelope', 'encode_request',
           'decode_reply', 'encode_notification', 'heartbeat', 'monitored',
           'split_context', 'unwrap']

LOG = logging.getLogger(__name__)

VERSION_KEY, MESSAGE_KEY, VERSION = 'oslo.version', 'oslo.message', '2.0'
CONTEXT_PREFIX = '_context_'
#: How many ``_unique_id``s a server remembers to drop duplicates.
SEEN_IDS = 4096

# rpcmq errors an oslo.messaging caller knows by oslo.messaging's names
# (it rebuilds neither unless allowed: both arrive as its RemoteError),
# and back: an rpcmq caller gets them as rpcmq's own.
_OSLO_NAMES = {
    ('rpcmq.exceptions', 'NoSuchMethod'):
        ('oslo_messaging.rpc.dispatcher', 'NoSuchMethod', 'method'),
    ('rpcmq.exceptions', 'UnsupportedVersion'):
        ('oslo_messaging.rpc.dispatcher', 'UnsupportedVersion', 'version'),
}
_OSLO_MESSAGES = {
    'NoSuchMethod': re.compile(r'RPC method (?P<method>\S+)'),
    'UnsupportedVersion': re.compile(
        r'RPC version (?P<version>[^\s.]+(?:\.[0-9]+)*)\.?(?: Attempted '
        r'method: (?P<method>\S+))?'),
}
_RPCMQ_NAMES = {(module, name): ('rpcmq.exceptions', ours, field)
                for (_, ours), (module, name, field) in _OSLO_NAMES.items()}


def is_envelope(body):
    """Whether ``body`` looks like oslo.messaging's envelope (its first
    key, as oslo.messaging writes it)."""
    head = body[:48]
    return (b'"oslo.version"' if isinstance(head, bytes)
            else '"oslo.version"') in head


def unwrap(body):
    """The inner message of an envelope, a dict."""
    outer = wire.decode_json(body, 'body')
    if not isinstance(outer, dict) or VERSION_KEY not in outer:
        raise MalformedMessage(reason='not an oslo.messaging envelope')
    version = outer[VERSION_KEY]
    if not isinstance(version, str) or version.split('.')[0] != '2':
        raise MalformedMessage(reason='oslo.messaging message version %r '
                                      'is not 2.x' % (version,))
    inner = outer.get(MESSAGE_KEY)
    if not isinstance(inner, str):
        raise MalformedMessage(reason='"oslo.message" must be JSON text')
    inner = wire.decode_json(inner, '"oslo.message"')
    if not isinstance(inner, dict):
        raise MalformedMessage(reason='"oslo.message" must hold an object')
    return inner


def wrap(inner):
    """The envelope around ``inner``, as bytes."""
    return wire.encode({VERSION_KEY: VERSION,
                        MESSAGE_KEY: json.dumps(inner)})


def decode_request(body):
    """``(msg, msg_id, reply_q, unique_id, client_timeout)``: ``msg`` in
    rpcmq's form (checked as any request is), ``msg_id`` None for a cast,
    ``client_timeout`` the caller's call-monitor timeout (``_timeout``) or
    None."""
    inner = unwrap(body)
    msg_id, reply_q = inner.pop('_msg_id', None), inner.pop('_reply_q', None)
    unique_id = inner.pop('_unique_id', None)
    client_timeout = inner.pop('_timeout', None)
    for name, value in (('_msg_id', msg_id), ('_reply_q', reply_q)):
        if value is not None and not (isinstance(value, str) and value):
            raise MalformedMessage(reason='%s must be a non-empty string'
                                   % name)
    if (msg_id is None) != (reply_q is None):
        raise MalformedMessage(reason='a call needs both _msg_id and '
                                      '_reply_q')
    msg = {'method': inner.get('method'), 'args': inner.get('args'),
           'namespace': inner.get('namespace'),
           'version': inner.get('version') or '1.0',
           'context': split_context(inner)}
    return (wire.check_request(msg), msg_id, reply_q, unique_id,
            client_timeout)


def encode_request(msg, msg_id=None, reply_q=None):
    """The envelope of request ``msg`` (rpcmq's form: method, args,
    context, namespace?, version?); a call names ``msg_id`` and
    ``reply_q``."""
    inner = {'method': msg['method'], 'args': msg['args'],
             '_unique_id': uuid.uuid4().hex}
    for field in ('namespace', 'version'):
        if msg.get(field) is not None:
            inner[field] = msg[field]
    for key, value in (msg.get('context') or {}).items():
        inner[CONTEXT_PREFIX + key] = value
    if msg_id is not None:
        # _timeout is oslo.messaging's call-monitor timeout, not the
        # call's: set, its servers send heartbeats (ending: false).
        inner.update(_msg_id=msg_id, _reply_q=reply_q, _timeout=None)
    return wrap(inner)


def encode_notification(msg, ctxt):
    """The envelope of notification ``msg`` with context ``ctxt``."""
    inner = dict(msg, _unique_id=uuid.uuid4().hex)
    for key, value in (ctxt or {}).items():
        inner[CONTEXT_PREFIX + key] = value
    return wrap(inner)


def split_context(inner):
    """Take the ``_context_*`` entries out of ``inner``; the context."""
    keys = [key for key in inner if key.startswith(CONTEXT_PREFIX)]
    return {key[len(CONTEXT_PREFIX):]: inner.pop(key) for key in keys}


def decode_reply(body, allowed=()):
    """The result of an oslo.messaging reply, or raise its failure
    (rebuilt as ``wire.rebuild_failure`` does); an rpcmq reply is read as
    ``wire.decode_reply`` does. ``allowed`` as there: the modules, or a
    callable returning them, called only for a failure."""
    if not is_envelope(body):
        return wire.decode_reply(body, allowed)
    inner = unwrap(body)
    failure = inner.get('failure')
    if failure:
        if isinstance(failure, str):
            failure = wire.decode_json(failure, 'failure')
        if not isinstance(failure, dict):
            failure = {'message': str(failure)}
        raise wire.rebuild_failure(_rpcmq_failure(failure), allowed()
                                   if callable(allowed) else allowed)
    return inner.get('result')


def _rpcmq_failure(failure):
    module, name = failure.get('module') or '', failure.get('class') or ''
    tb = failure.get('tb') or []
    ours = {'type': name, 'module': module,
            'message': failure.get('message', ''),
            'traceback': ''.join(tb) if isinstance(tb, list) else str(tb),
            'args': failure.get('args') or None,
            'kwargs': failure.get('kwargs') or None}
    rpcmq = _RPCMQ_NAMES.get((module, name))
    if rpcmq is not None:
        # oslo.messaging's carry only their message: read the fields off it
        found = _OSLO_MESSAGES[name].search(ours['message'])
        ours.update(module=rpcmq[0], type=rpcmq[1], args=None,
                    kwargs=dict(found.groupdict() if found else {},
                                namespace=None))
    return ours


def reply(msg_id, rpcmq_reply):
    """oslo.messaging's reply to call ``msg_id``, from rpcmq's reply
    (``{"result"}`` or ``{"failure"}`` bytes, as ``wire`` encodes it)."""
    decoded = json.loads(rpcmq_reply)
    failure = decoded.get('failure')
    if failure is not None:
        failure = json.dumps(_oslo_failure(failure))
    return wrap({'result': decoded.get('result'), 'failure': failure,
                 'ending': True, '_msg_id': msg_id,
                 '_unique_id': uuid.uuid4().hex})


def _oslo_failure(failure):
    module, name = failure.get('module', ''), failure.get('type', '')
    message = failure.get('message', '')
    args, kwargs = failure.get('args'), failure.get('kwargs') or {}
    oslo = _OSLO_NAMES.get((module, name))
    if oslo is not None:
        module, name, field = oslo
        args, kwargs = [kwargs.get(field, message)], {}
    elif args is None:
        args = [message]
    tb = failure.get('traceback') or ''
    return {'class': name, 'module': module, 'message': message,
            'tb': tb.splitlines(True), 'args': args, 'kwargs': kwargs}


def heartbeat(msg_id):
    """oslo.messaging's call-monitor heartbeat for call ``msg_id``: a
    reply without result that is not the end."""
    return wrap({'result': None, 'failure': None, 'ending': False,
                 '_msg_id': msg_id, '_unique_id': uuid.uuid4().hex})


def heartbeat_interval(client_timeout):
    """Seconds between the heartbeats of a call whose caller's
    call-monitor timeout is ``client_timeout``: half of it, as
    oslo.messaging's servers do (whole seconds, at least 2); None if
    there is none or it is not one (logged)."""
    if client_timeout is None:
        return None
    try:
        interval = int(client_timeout) / 2
    except (TypeError, ValueError, OverflowError):
        interval = 0
    if interval < 1:
        LOG.warning('an oslo.messaging caller sent the call-monitor timeout '
                    '%r; it needs whole seconds, at least 2: no heartbeats '
                    'are sent for that call', client_timeout)
        return None
    return interval


class _Heartbeats:
    """While the call runs, tell its caller every ``interval`` seconds
    that it still does (a thread of its own: green under eventlet)."""

    def __init__(self, request, interval):
        self.request = request
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='rpcmq-call-monitor')

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()  # the last heartbeat leaves before the result

    def _run(self):
        msg_id = self.request.correlation_id
        while not self._done.wait(self.interval):
            try:
                self.request.reply(heartbeat(msg_id))
            except Exception as exc:
                LOG.warning('could not send a call-monitor heartbeat for '
                            'call %s to %s: %s; the caller may give up',
                            msg_id, self.request.reply_to, exc)
                return


def monitored(incoming):
    """A context in which ``incoming`` runs: oslo.messaging's calls with a
    call-monitor timeout get heartbeats meanwhile; anything else, none."""
    interval = getattr(incoming, 'heartbeat_interval', None)
    if interval is None:
        return contextlib.nullcontext()
    return _Heartbeats(incoming, interval)


class OsloRequest:
    """An incoming message holding an oslo.messaging request; everything
    but where its reply goes and in which form is the message's."""

    def __init__(self, incoming, msg, msg_id, reply_q, client_timeout=None):
        self._incoming = incoming
        self.decoded = msg
        self.correlation_id = msg_id
        self.reply_to = reply_q
        self.heartbeat_interval = (heartbeat_interval(client_timeout)
                                   if msg_id is not None else None)

    def __getattr__(self, name):
        return getattr(self._incoming, name)

    def reply_body(self, body):
        """oslo.messaging's form of rpcmq's reply ``body``."""
        return reply(self.correlation_id, body)

    def reply(self, body, headers=None):
        """Send ``body`` (``reply_body``'s) to ``_reply_q``."""
        self._incoming.reply(body, headers, to=self.reply_to,
                             correlation_id=self.correlation_id)


class OsloRequests:
    """A server's side of oslo.messaging's wire: recognise its requests,
    drop the ones it sent twice."""

    def __init__(self, topic, max_size):
        self.topic = topic
        self.max_size = max_size
        self._seen = collections.OrderedDict()
        self._lock = threading.Lock()

    def adapt(self, incoming):
        """``incoming`` itself (not oslo.messaging's), an OsloRequest, or
        None for one already handled: a duplicate (logged) or a malformed
        envelope (logged and refused)."""
        if not is_envelope(incoming.body):
            return incoming
        try:
            if len(incoming.body) > self.max_size:
                raise MessageTooLarge(size=len(incoming.body),
                                      limit=self.max_size)
            msg, msg_id, reply_q, unique_id, client_timeout = \
                decode_request(incoming.body)
        except (MalformedMessage, MessageTooLarge) as exc:
            LOG.warning('rejected an oslo.messaging message from queue of '
                        '%s: %s', self.topic, exc)
            incoming.refuse('%s: %s' % (type(exc).__name__, exc))
            return None
        if unique_id is not None and not self._first(unique_id):
            LOG.info('dropped a duplicate oslo.messaging %s %s on %s '
                     '(_unique_id %s)', 'call' if msg_id else 'cast',
                     msg['method'], self.topic, unique_id)
            return None
        return OsloRequest(incoming, msg, msg_id, reply_q, client_timeout)

    def _first(self, unique_id):
        with self._lock:
            if unique_id in self._seen:
                return False
            self._seen[unique_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            return True
