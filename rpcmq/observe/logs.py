"""Structured logs: ``[DEFAULT] log_format = json`` and the log context.

``log_context(method=..., correlation_id=...)`` names what the current
thread (or green thread) works on; every record logged inside it carries
those fields. ``JsonFormatter`` writes one JSON object per line:
``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
context fields, ``pid``, and ``exception`` (the traceback text) where
there is one. Log messages never hold secrets (URLs are logged without
their password, keys by their id): that holds in both formats.
"""

import contextvars
import datetime
import json
import logging
import os

__all__ = ['JsonFormatter', 'log_context', 'push']

#: Fields a log line may carry about the work it belongs to.
FIELDS = ('batch_id', 'item', 'method', 'correlation_id', 'topic',
          'trace_id')

_CONTEXT = contextvars.ContextVar('rpcmq_log_context', default=None)


class log_context:
    """``with log_context(**fields):`` records logged inside carry
    ``fields`` (None values are left out) on top of the enclosing
    context's. A class, not a generator: servers enter one per message."""

    __slots__ = ('_fields', '_token')

    def __init__(self, **fields):
        self._fields = fields

    def __enter__(self):
        self._token = push(self._fields)

    def __exit__(self, *exc_info):
        _CONTEXT.reset(self._token)


def push(*sources):
    """Make the log context the current one plus the fields of each dict
    in ``sources`` (None values left out); return the token that puts the
    old one back (``_CONTEXT.reset``)."""
    merged = _CONTEXT.get()
    merged = dict(merged) if merged else {}
    for fields in sources:
        for key, value in fields.items():
            if value is not None:
                merged[key] = value
    return _CONTEXT.set(merged)


class JsonFormatter(logging.Formatter):

    def format(self, record):
        entry = {
            'timestamp': datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc).isoformat(
                    timespec='milliseconds'),
            'level': record.levelname,
            'logger': record.name,
            'message': record.getMessage(),
            'pid': record.process or os.getpid(),
        }
        entry.update(_CONTEXT.get() or {})
        for field in FIELDS:  # logging's extra= wins over the context
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry['exception'] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry['exception'] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)
