"""The wire format: JSON envelopes and remote errors (docs/wire-format.md).

Request: ``{"method", "args", "namespace"?, "version"?, "context"?}``.
Reply: ``{"result": ...}`` or ``{"failure": {"type", "module", "message",
"traceback", "args", "kwargs"}}``. No pickle: a failure is rebuilt only as
an exception class named by module and type, and only for builtins,
rpcmq's own modules and ``allowed_remote_exmods``.
"""

import builtins
import importlib
import json
import traceback

from rpcmq.exceptions import MalformedMessage, RemoteError, RpcmqError

__all__ = ['encode', 'decode_request', 'decode_reply', 'failure_reply',
           'result_reply']

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode


def encode(obj):
    """JSON bytes of ``obj``; TypeError names what is not JSON-able."""
    return _dumps(obj).encode('utf-8')


def decode_request(body):
    """Validate a request body; raise MalformedMessage saying what is off."""
    try:
        msg = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(reason='body is not JSON (%s)' % exc) from None
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

    Builtins and ``allowed`` modules may; rpcmq's own modules only for
    rpcmq errors (fetch, storage, conductor ...). Nothing else is imported.
    """
    own = module.startswith('rpcmq.')
    if not (module == 'builtins' or own or module in allowed):
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
    """The call's result, or raise the remote failure."""
    try:
        reply = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(reason='reply is not JSON (%s)' % exc) from None
    if not isinstance(reply, dict):
        raise MalformedMessage(reason='reply must be a JSON object')
    if 'failure' in reply:
        failure = reply['failure']
        if not isinstance(failure, dict):
            failure = {'message': str(failure)}
        raise rebuild_failure(failure, allowed)
    return reply.get('result')
