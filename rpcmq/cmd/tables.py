"""What ``rpcmq batch status / list / cancel / retry`` print for people:
rich tables with local dates. ``--json`` prints the conductor's reply as
it is instead, for scripts.

Every value that comes from the conductor or a remote server is printed
as plain text (``Text``), never parsed as rich markup.
"""

import time

from rich.table import Table
from rich.text import Text

from rpcmq.conductor.schema import TOTALS as COUNTS

__all__ = ['print_result']


def when(seconds):
    """Local date and time of epoch ``seconds`` ('' when unknown)."""
    if not isinstance(seconds, (int, float)):
        return ''
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seconds))


def _row(*values):
    return [Text('' if v is None else str(v)) for v in values]


def _totals(totals, title=None):
    table = Table(*COUNTS, title=title, title_justify='left')
    table.add_row(*_row(*(totals.get(name, 0) for name in COUNTS)))
    return table


def _what(item):
    """The store key of a stored item, else its error."""
    if item.get('state') == 'done':
        result = item.get('result') or {}
        return result.get('key') or item.get('key') or ''
    error = item.get('error') or {}
    if error:
        return '%s: %s' % (error.get('type'), error.get('message'))
    return item.get('key') or ''


def _items(items):
    table = Table('#', 'state', 'attempts', 'url', 'key or error')
    for item in items:
        table.add_row(*_row(item.get('idx'), item.get('state'),
                            item.get('attempts'), item.get('url'),
                            _what(item)))
    return table


def status(out, result):
    out.print(Text('batch %s  %s' % (result.get('batch_id'),
                                     result.get('state'))))
    out.print(Text('created %s  updated %s' % (
        when(result.get('created_at')), when(result.get('updated_at')))))
    out.print(_totals(result.get('totals') or {}))
    if 'items' in result:
        out.print(_items(result['items']))


def batches(out, result):
    if not result:
        out.print('no batches')
        return
    table = Table('batch', 'state', 'created', 'updated', *COUNTS)
    for batch in result:
        totals = batch.get('totals') or {}
        table.add_row(*_row(batch.get('batch_id'), batch.get('state'),
                            when(batch.get('created_at')),
                            when(batch.get('updated_at')),
                            *(totals.get(name, 0) for name in COUNTS)))
    out.print(table)


def print_result(out, action, result, batch_id=None):
    """Print the reply to batch ``action`` as a person would read it."""
    if action == 'status':
        status(out, result)
    elif action == 'list':
        batches(out, result)
    elif action == 'cancel':
        out.print(_totals(result, title='batch %s cancelled; its items '
                                        'now' % batch_id))
    else:
        out.print(Text('batch %s: %d failed items run again'
                       % (batch_id, result.get('retried', 0))))
