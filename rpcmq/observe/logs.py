"""Structured logs: ``[DEFAULT] log_format = json`` and the log context.

``log_context(method=..., correlation_id=...)`` names what the current
thread (or green thread) works on; every record logged inside it carries
those fields. ``JsonFormatter`` writes one JSON object per line:
``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
context fields, ``pid``, and ``exception`` (the traceback text) where
there is one. Log messages never hold secrets (URLs are logged without
their password, keys by their id): that holds in both formats.
"""

import contextlib
import contextvars
import datetime
import json
import logging
import os

__all__ = ['JsonFormatter', 'log_context', 'current_context']

#: Fields a log line may carry about the work it belongs to.
FIELDS = ('batch_id', 'item', 'method', 'correlation_id', 'topic',
          'trace_id')

_CONTEXT = contextvars.ContextVar('rpcmq_log_context', default=None)


@contextlib.contextmanager
def log_context(**fields):
    """Records logged inside carry ``fields`` (None values are left out)
    on top of the enclosing context's."""
    merged = dict(_CONTEXT.get() or {})
    merged.update((k, v) for k, v in fields.items() if v is not None)
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context():
    return dict(_CONTEXT.get() or {})


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
