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

import contextlib
import contextvars
import random
import re

from rpcmq.observe.logs import log_context

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
    parsed = parse(parent)
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


@contextlib.contextmanager
def continued(traceparent):
    """Work on ``traceparent``'s trace inside (nothing if it is invalid):
    ``current()`` returns it and log lines carry its ``trace_id``."""
    parsed = parse(traceparent)
    if parsed is None:
        yield None
        return
    token = _CURRENT.set(traceparent)
    try:
        with log_context(trace_id=parsed[0]):
            yield traceparent
    finally:
        _CURRENT.reset(token)


def outgoing(ctxt):
    """The traceparent header of a request sent with context ``ctxt``."""
    given = ctxt.get(HEADER) if isinstance(ctxt, dict) else None
    return child(given if parse(given) else current())


_KINDS = ('client', 'producer', 'server', 'consumer', 'internal')


@contextlib.contextmanager
def span(name, kind, parent=None, **attributes):
    """A span of work under ``parent`` (a traceparent; None: the current
    trace, else the program's active OpenTelemetry span, else a new
    trace); yields the span's own traceparent. A real OpenTelemetry span
    where it is installed and configured; otherwise only its ids."""
    assert kind in _KINDS, kind
    parent = parent if parse(parent) else current()
    if otel is None or isinstance(otel.get_tracer_provider(),
                                  otel.ProxyTracerProvider):
        # Not installed, or no tracer provider set: spans would record
        # nothing; the ids alone cost far less.
        yield child(parent)
        return
    propagator = TraceContextTextMapPropagator()
    context = propagator.extract({HEADER: parent}) if parent else None
    tracer = otel.get_tracer('rpcmq')
    with tracer.start_as_current_span(
            name, context=context, kind=getattr(otel.SpanKind, kind.upper()),
            attributes={k: v for k, v in attributes.items()
                        if v is not None}) as active:
        carrier = {}
        if active.get_span_context().is_valid:
            propagator.inject(carrier, context=otel.set_span_in_context(
                active))
        # A tracer that records nothing (no provider configured) gives no
        # ids of its own: continue with ours.
        own = carrier.get(HEADER)
        yield own if parse(own) and own != parent else child(parent)


@contextlib.contextmanager
def sending(ctxt, topic, method, wait):
    """Around sending a request with context ``ctxt``: yields the headers
    that carry its trace (a call's or cast's span)."""
    given = ctxt.get(HEADER) if isinstance(ctxt, dict) else None
    with span('%s %s' % (topic, method), 'client' if wait else 'producer',
              given, **{'messaging.system': 'rabbitmq',
                        'messaging.destination.name': topic,
                        'rpc.method': method}) as own:
        yield {HEADER: own}


@contextlib.contextmanager
def handling(traceparent, name, kind='server', **attributes):
    """Work on a request (or an item) that came with ``traceparent``: a
    span under it, made the current trace (``continued``)."""
    with span(name, kind, traceparent if parse(traceparent) else None,
              **attributes) as own, continued(own):
        yield own
