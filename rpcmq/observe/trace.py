"""W3C trace context (``traceparent``) across calls, casts and batches.

A request carries ``traceparent: 00-<trace id>-<parent id>-<flags>`` in
its AMQP headers (https://www.w3.org/TR/trace-context/). The client takes
it from the call's context dict (``ctxt['traceparent']``), else continues
the trace the current thread works on (a server handling a request, a
conductor running an item), else starts a new trace; it sends a new
parent id (its own span) on the same trace. A server continues the
trace of the header while it handles the request: the endpoint's context
dict has ``traceparent`` (unless the caller put one there), JSON log lines
carry ``trace_id``, and calls the endpoint makes continue the trace. The
conductor keeps the traceparent of a batch's submit and runs every item
of the batch on that trace.

With OpenTelemetry installed (``pip install rpcmq[otel]``) and a tracer
provider configured by the program, each of these is also a span of that
provider: ``<topic> <method>`` for a call (client) or a cast (producer),
``<topic> process`` for a server handling a request, ``batch item`` for
the conductor's work on an item; an active OpenTelemetry span of the
program is the parent of the calls made under it. Without it, only the
ids travel.

The header is not signed: it tells tracing systems how requests relate,
never what a server may do. Malformed values are ignored.
"""

import contextvars
import os
import random
import re

from rpcmq.observe import logs

try:
    from opentelemetry import trace as otel
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator,
    )
except ImportError:  # the otel extra is optional
    otel = None

__all__ = ['HEADER', 'parse', 'child', 'current', 'continued', 'outgoing',
           'span', 'sending', 'handling']

HEADER = 'traceparent'
_FORMAT = re.compile(r'^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$')
_CURRENT = contextvars.ContextVar('rpcmq_traceparent', default=None)


def parse(value):
    """``(trace_id, parent_id, flags)`` of a valid traceparent, else
    None (wrong form, version other than 00, or all-zero ids)."""
    if not isinstance(value, str):
        return None
    found = _FORMAT.match(value)
    if found is None:
        return None
    trace_id, parent_id, flags = found.groups()
    if not trace_id.strip('0') or not parent_id.strip('0'):
        return None
    return trace_id, parent_id, flags


def child(parent=None):
    """A traceparent for a new span under ``parent`` (a traceparent), or
    the first span of a new, sampled trace."""
    return _child_of(parse(parent))


def _child_of(parsed):
    """``child`` of a parsed traceparent (None: a new trace)."""
    if parsed is None:
        trace_id, flags = _random_id(128), '01'
    else:
        trace_id, _, flags = parsed
    return '00-%s-%s-%s' % (trace_id, _random_id(64), flags)


def _random_id(bits):
    """Random, non-zero lowercase hex of ``bits`` (ids, not secrets: as
    OpenTelemetry's SDK makes them)."""
    return '%0*x' % (bits // 4, random.getrandbits(bits) or 1)


def current():
    """The traceparent the current thread works under, or None."""
    return _CURRENT.get()


class continued:
    """``with continued(traceparent):`` work on that trace inside (nothing
    if it is invalid): ``current()`` returns it and log lines carry its
    ``trace_id``. Yields the traceparent (None if invalid)."""

    __slots__ = ('_traceparent', '_tokens')

    def __init__(self, traceparent):
        self._traceparent = traceparent
        self._tokens = None

    def __enter__(self):
        parsed = parse(self._traceparent)
        if parsed is None:
            return None
        self._tokens = (_CURRENT.set(self._traceparent),
                        logs.push({'trace_id': parsed[0]}))
        return self._traceparent

    def __exit__(self, *exc_info):
        if self._tokens is not None:
            _CURRENT.reset(self._tokens[0])
            logs._CONTEXT.reset(self._tokens[1])


def outgoing(ctxt):
    """The traceparent header of a request sent with context ``ctxt``."""
    return _own(ctxt.get(HEADER) if isinstance(ctxt, dict) else None)


def _own(parent):
    """A new span's traceparent under ``parent`` if it is valid, else
    under the current trace, else on a new trace: ids only."""
    parsed = parse(parent)
    if parsed is None:
        parsed = parse(current())
    return _child_of(parsed)


_KINDS = ('client', 'producer', 'server', 'consumer', 'internal')


#: A provider named in the environment is loaded by the first lookup.
_PROVIDER_FROM_ENV = 'OTEL_PYTHON_TRACER_PROVIDER' in os.environ


def _recording():
    """True where OpenTelemetry is installed and the program set a tracer
    provider: otherwise spans would record nothing, and the ids alone
    cost far less. ``get_tracer_provider()`` reads the environment on
    every call until a provider is set, so its global is looked at first.
    """
    if otel is None:
        return False
    if getattr(otel, '_TRACER_PROVIDER', None) is None and \
            not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(otel.get_tracer_provider(),
                          otel.ProxyTracerProvider)


class span:
    """``with span(name, kind, parent, **attributes) as own:`` a span of
    work under ``parent`` (a traceparent; None: the current trace, else
    the program's active OpenTelemetry span, else a new trace); ``own`` is
    the span's traceparent. A real OpenTelemetry span where it records;
    otherwise only its ids."""

    __slots__ = ('_args', '_otel')

    def __init__(self, name, kind, parent=None, **attributes):
        assert kind in _KINDS, kind
        self._args = (name, kind, parent, attributes)
        self._otel = None

    def __enter__(self):
        name, kind, parent, attributes = self._args
        if not _recording():
            return _own(parent)
        parent = parent if parse(parent) else current()
        propagator = TraceContextTextMapPropagator()
        context = propagator.extract({HEADER: parent}) if parent else None
        self._otel = otel.get_tracer('rpcmq').start_as_current_span(
            name, context=context, kind=getattr(otel.SpanKind, kind.upper()),
            attributes={k: v for k, v in attributes.items()
                        if v is not None})
        active = self._otel.__enter__()
        carrier = {}
        if active.get_span_context().is_valid:
            propagator.inject(carrier, context=otel.set_span_in_context(
                active))
        own = carrier.get(HEADER)
        return own if parse(own) and own != parent else child(parent)

    def __exit__(self, *exc_info):
        if self._otel is not None:
            return self._otel.__exit__(*exc_info)
        return None


class sending:
    """``with sending(ctxt, topic, method, wait) as headers:`` around
    sending a request with context ``ctxt``; ``headers`` carry its trace
    (the call's or the cast's span)."""

    __slots__ = ('_args', '_span')

    def __init__(self, ctxt, topic, method, wait):
        given = ctxt.get(HEADER) if isinstance(ctxt, dict) else None
        self._args = (given, topic, method, wait)
        self._span = None

    def __enter__(self):
        given, topic, method, wait = self._args
        if not _recording():  # the ids only: no span to build
            return {HEADER: _own(given)}
        self._span = span('%s %s' % (topic, method),
                          'client' if wait else 'producer', given, **{
                              'messaging.system': 'rabbitmq',
                              'messaging.destination.name': topic,
                              'rpc.method': method})
        return {HEADER: self._span.__enter__()}

    def __exit__(self, *exc_info):
        if self._span is not None:
            return self._span.__exit__(*exc_info)
        return None


class handling:
    """``with handling(traceparent, name, kind, **attributes) as own:``
    work on a request (or an item) that came with ``traceparent``: a span
    under it, made the current trace (``continued``); log lines inside
    also carry ``log_fields`` (one context for both: a server enters one
    per message)."""

    __slots__ = ('_args', '_span', '_tokens', '_log_fields')

    def __init__(self, traceparent, name, kind='server', log_fields=None,
                 **attributes):
        self._args = (traceparent, name, kind, attributes)
        self._log_fields = log_fields
        self._span = None

    def __enter__(self):
        traceparent, name, kind, attributes = self._args
        if _recording():
            self._span = span(name, kind, traceparent, **attributes)
            own = self._span.__enter__()
        else:  # the ids only: no span to build
            own = _own(traceparent)
        # continued(own), without parsing what child() just made
        self._tokens = (_CURRENT.set(own), logs.push(
            self._log_fields or {}, {'trace_id': own[3:35]}))
        return own

    def __exit__(self, *exc_info):
        _CURRENT.reset(self._tokens[0])
        logs._CONTEXT.reset(self._tokens[1])
        if self._span is not None:
            return self._span.__exit__(*exc_info)
        return None
