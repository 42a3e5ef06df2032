"""Find the endpoint method a request names and run it.

An endpoint is a plain object. Its optional ``target`` attribute gives the
namespace (default None) and the version it implements (default "1.0").
A request matches an endpoint when the namespaces are equal and the
versions are compatible: same major, requested minor <= implemented.
Methods whose names start with ``_`` are never callable.
"""

import functools
import inspect
import logging

from rpcmq.exceptions import InvalidArguments, NoSuchMethod, UnsupportedVersion

__all__ = ['RPCDispatcher', 'expected_exceptions', 'ExpectedException',
           'version_is_compatible']

LOG = logging.getLogger(__name__)

DEFAULT_VERSION = '1.0'


def _split(version):
    major, _, minor = version.partition('.')
    return int(major), int(minor or 0)


def version_is_compatible(implemented, requested):
    """True if an endpoint at ``implemented`` can serve ``requested``."""
    try:
        imp, req = _split(implemented), _split(requested)
    except ValueError:
        return False
    return imp[0] == req[0] and req[1] <= imp[1]


@functools.lru_cache(maxsize=4096)
def _binder(func, bound):
    """``check(ctxt, args)`` for an endpoint method: raises the TypeError
    ``inspect.Signature.bind`` raises if ``func(ctxt, **args)`` could
    not bind (without self if ``bound``)."""
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1 if bound else 0:]
    bind = sig.replace(parameters=params).bind
    P = inspect.Parameter

    def slow(ctxt, args):
        bind(ctxt, **args)

    # The fast check covers the usual shape: the context taken by the
    # first parameter, keyword arguments after it. Anything else (or any
    # argument that does not fit) goes to Signature.bind, which also
    # words the error.
    if not params or params[0].kind not in (P.POSITIONAL_ONLY,
                                            P.POSITIONAL_OR_KEYWORD) or \
            any(p.kind in (P.POSITIONAL_ONLY, P.VAR_POSITIONAL)
                for p in params[1:]):
        return slow
    rest = params[1:]
    names = frozenset(p.name for p in rest if p.kind != P.VAR_KEYWORD)
    required = frozenset(p.name for p in rest if p.kind != P.VAR_KEYWORD
                         and p.default is P.empty)
    any_keyword = any(p.kind == P.VAR_KEYWORD for p in rest)
    ctxt_name = params[0].name

    def check(ctxt, args):
        if ctxt_name in args or not required <= args.keys() or \
                (not any_keyword and not args.keys() <= names):
            bind(ctxt, **args)  # raises, in Python's words
    return check


class ExpectedException(Exception):
    """Wraps an error an endpoint declared as expected; not logged loudly."""

    def __init__(self, exc):
        super().__init__(str(exc))
        self.exc = exc


def expected_exceptions(*exceptions):
    """Declare errors that are part of a method's contract.

    They still reach the caller with their type, but the server logs them
    at debug level instead of as errors with a traceback.
    """
    def outer(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except exceptions as exc:
                raise ExpectedException(exc) from exc
        return inner
    return outer


class RPCDispatcher:
    """Routes ``(ctxt, method, args, namespace, version)`` to an endpoint."""

    def __init__(self, endpoints):
        self.endpoints = list(endpoints)

    @staticmethod
    def _endpoint_target(endpoint):
        target = getattr(endpoint, 'target', None)
        namespace = getattr(target, 'namespace', None)
        version = getattr(target, 'version', None) or DEFAULT_VERSION
        return namespace, version

    def lookup(self, method, namespace=None, version=None):
        """The bound method to run, or NoSuchMethod / UnsupportedVersion."""
        if method.startswith('_'):
            raise NoSuchMethod(method=method, namespace=namespace)
        found_namespace = False
        for endpoint in self.endpoints:
            ep_namespace, ep_version = self._endpoint_target(endpoint)
            if ep_namespace != namespace:
                continue
            func = getattr(endpoint, method, None)
            if func is None or not callable(func):
                continue
            found_namespace = True
            if version is None or version_is_compatible(ep_version, version):
                return func
        if found_namespace:
            raise UnsupportedVersion(version=version, namespace=namespace,
                                     method=method)
        raise NoSuchMethod(method=method, namespace=namespace)

    def dispatch(self, ctxt, method, args, namespace=None, version=None):
        func = self.lookup(method, namespace, version)
        try:
            _binder(func.__func__ if hasattr(func, '__func__') else func,
                    hasattr(func, '__func__'))(ctxt, args)
        except TypeError as exc:
            raise InvalidArguments(method=method, reason=str(exc)) from None
        return func(ctxt, **args)
