"""The wire format: JSON envelopes and remote errors (docs/wire-format.md).

Request: ``{"method", "args", "namespace"?, "version"?, "context"?}``.
Reply: ``{"result": ...}`` or ``{"failure": {"type", "module", "message",
"traceback", "args", "kwargs"}}``. No pickle: a failure is rebuilt only as
an exception class named by module and type, and only for builtins,
rpcmq's error modules (``ERROR_MODULES``) and ``allowed_remote_exmods``;
no other module a message names is ever imported.

Bodies nested too deeply for the decoder, and requests holding lone UTF-16
surrogates, are refused as MalformedMessage.
"""

import builtins
import importlib
import json
import re
import traceback

from rpcmq.exceptions import MalformedMessage, RemoteError, RpcmqError

__all__ = ['encode', 'decode_request', 'decode_reply', 'failure_reply',
           'result_reply', 'rebuild_failure', 'ERROR_MODULES']

#: The modules that define the rpcmq errors which travel in replies. A
#: failure naming one of them is rebuilt as its own type (an RpcmqError
#: subclass only); any other rpcmq module is treated like a foreign one.
ERROR_MODULES = ('rpcmq.exceptions', 'rpcmq.fetch.errors',
                 'rpcmq.storage.errors', 'rpcmq.conductor.errors')

# JSON has no NaN or infinities (Python's json writes and reads them):
# what rpcmq writes is strict JSON, and it refuses them in a request.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'),
                          allow_nan=False).encode


def _no_constant(name):
    raise ValueError('%s is not JSON; send such numbers as strings or '
                     'null' % name)


_strict = json.JSONDecoder(parse_constant=_no_constant).decode

# A \uXXXX escape of a surrogate (D800-DFFF) in a bytes body; a str body
# may also hold the surrogate itself.
_SURROGATE_ESCAPE = re.compile(rb'\\u[dD][89a-fA-F]')
_SURROGATE_IN_STR = re.compile(r'\\u[dD][89a-fA-F]|[\ud800-\udfff]')


def encode(obj):
    """JSON bytes of ``obj``; TypeError names what is not JSON-able,
    ValueError a NaN or infinity (no JSON number)."""
    try:
        return _dumps(obj).encode('utf-8')
    except ValueError as exc:
        if not str(exc).startswith('Out of range float'):
            raise  # a circular reference, a lone surrogate...
        raise ValueError('%s: NaN and infinities are not JSON; send them '
                         'as strings or null' % exc) from None


def _loads(body, what, strict=False):
    """``json.loads(body)``; MalformedMessage naming ``what`` if it is not
    JSON or nests arrays and objects deeper than Python's recursion limit
    (json raises RecursionError for those, in C, before it runs out of
    stack). ``strict``: NaN and infinities are refused too."""
    try:
        if not strict:
            return json.loads(body)
        if not isinstance(body, str):  # as json.loads reads bytes
            body = body.decode(json.detect_encoding(body), 'surrogatepass')
        return _strict(body)
    except RecursionError:
        raise MalformedMessage(reason='%s is nested too deeply' % what) \
            from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(reason='%s is not JSON (%s)' % (what, exc)) \
            from None


def _check_surrogates(body, msg):
    """Refuse a lone UTF-16 surrogate: json decodes a ``\\ud800`` escape that
    is not half of a valid pair into a str no UTF-8 can encode, so the
    method would run and its reply fail. Only a body with such an escape
    (or not in UTF-8, where the escape would not show) is checked
    thoroughly: every key and value of the decoded message is encoded as
    UTF-8 (in C), which a valid pair, one character by then, passes."""
    if isinstance(body, str):
        if not _SURROGATE_IN_STR.search(body):
            return
    elif not _SURROGATE_ESCAPE.search(body) and \
            json.detect_encoding(body).startswith('utf-8'):
        return
    try:
        json.dumps(msg, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError as exc:
        raise MalformedMessage(
            reason='body holds a lone UTF-16 surrogate (\\u%04x), which is '
                   'not a character; escape characters outside the BMP as '
                   'a high-low surrogate pair, or send them as UTF-8'
                   % ord(exc.object[exc.start])) from None


def decode_json(body, what, strict=False):
    """The JSON value of ``body`` (bytes or str); MalformedMessage naming
    ``what`` if it is not JSON, nests too deeply or holds a lone
    surrogate (``strict``: or NaN or an infinity)."""
    value = _loads(body, what, strict)
    _check_surrogates(body, value)
    return value


def decode_request(body):
    """Validate a request body; raise MalformedMessage saying what is off."""
    return check_request(decode_json(body, 'body', strict=True))


def check_request(msg):
    """Validate a decoded request (filling in empty args and context)."""
    if not isinstance(msg, dict):
        raise MalformedMessage(reason='body must be a JSON object, got %s'
                               % type(msg).__name__)
    method = msg.get('method')
    if not isinstance(method, str) or not method:
        raise MalformedMessage(reason='"method" must be a non-empty string')
    args = msg.setdefault('args', {})
    if args is None:
        args = msg['args'] = {}
    if not isinstance(args, dict):
        raise MalformedMessage(reason='"args" must be a JSON object of '
                                      'keyword arguments')
    for field in ('namespace', 'version'):
        if msg.get(field) is not None and not isinstance(msg[field], str):
            raise MalformedMessage(reason='"%s" must be a string' % field)
    ctxt = msg.get('context')
    if ctxt is None:
        msg['context'] = {}
    elif not isinstance(ctxt, dict):
        raise MalformedMessage(reason='"context" must be a JSON object')
    return msg


def result_reply(result):
    return encode({'result': result})


def failure_reply(exc, tb=None):
    """Encode ``exc`` so the caller can rebuild it (see ``decode_reply``)."""
    cls = type(exc)
    failure = {
        'type': cls.__name__,
        'module': cls.__module__,
        'message': str(exc),
        'traceback': tb if tb is not None else ''.join(
            traceback.format_exception(cls, exc, exc.__traceback__)),
    }
    if isinstance(exc, RpcmqError):
        failure['kwargs'] = exc.kwargs
    else:
        failure['args'] = list(exc.args)
    try:
        return encode({'failure': failure})
    except (TypeError, ValueError):
        failure.pop('kwargs', None)
        failure['args'] = [str(a) for a in exc.args]
        return encode({'failure': failure})


def _exception_class(module, name, allowed):
    """The class a failure names if it may be rebuilt here, else None.

    Only exact module names are looked at: ``builtins``, ``ERROR_MODULES``
    (for RpcmqError subclasses) and the ``allowed`` ones
    (``allowed_remote_exmods``). No other module is ever imported: a
    message may name any module, and importing one runs its code (e.g.
    ``rpcmq.cmd.server`` monkey-patches the process with eventlet).
    """
    if not (isinstance(module, str) and isinstance(name, str)):
        return None
    own = module in ERROR_MODULES
    if not (module == 'builtins' or own or module in (allowed or ())):
        return None
    try:
        mod = builtins if module == 'builtins' else \
            importlib.import_module(module)
    except ImportError:
        return None
    cls = getattr(mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    if own and module not in allowed and not issubclass(cls, RpcmqError):
        return None
    return cls


def rebuild_failure(failure, allowed=()):
    """The exception a failure dict describes, as its own type if allowed."""
    module = failure.get('module') or ''
    name = failure.get('type') or 'Exception'
    message = failure.get('message', '')
    tb = failure.get('traceback', '')
    exc = None
    cls = _exception_class(module, name, allowed)
    if cls is not None:
        try:
            if issubclass(cls, RpcmqError):
                exc = cls(message, **(failure.get('kwargs') or {}))
            else:
                exc = cls(*(failure.get('args') or [message]))
        except Exception:  # not rebuildable from what came: RemoteError
            exc = None
    if exc is None:
        qualified = name if module in ('', 'builtins') else \
            '%s.%s' % (module, name)
        exc = RemoteError(exc_type=qualified, value=message, traceback=tb)
    exc.remote_traceback = tb
    return exc


def decode_reply(body, allowed=()):
    """The call's result, or raise the remote failure. ``allowed``: the
    modules whose exceptions are rebuilt as their own type
    (``rebuild_failure``), or a callable returning them, called only for
    a failure."""
    reply = _loads(body, 'reply')
    if not isinstance(reply, dict):
        raise MalformedMessage(reason='reply must be a JSON object')
    if 'failure' in reply:
        failure = reply['failure']
        if not isinstance(failure, dict):
            failure = {'message': str(failure)}
        raise rebuild_failure(failure, allowed() if callable(allowed)
                              else allowed)
    return reply.get('result')
