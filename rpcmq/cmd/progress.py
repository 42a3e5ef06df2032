"""Follow a batch: a live progress bar fed by batch.* events, and the
final report. Used by ``rpcmq batch watch``, ``submit --watch`` and the
demo."""

import threading
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from rpcmq.notify import get_notification_listener
from rpcmq.target import Target

__all__ = ['BatchWatcher', 'print_report']

TERMINAL = ('done', 'failed', 'cancelled')


class BatchWatcher:
    """Notification endpoint + renderer for one batch.

    Events can repeat (they are sent at least once) and the watcher may
    start late, so counts come from the set of finished item indexes and
    are re-synchronised from ``batch.status`` every ``resync`` seconds.
    """

    def __init__(self, transport, api, batch_id, console=None, resync=2.0):
        self.api = api
        self.batch_id = batch_id
        self.console = console or Console(stderr=True)
        self.resync = resync
        self.total = None
        self.finished = {}
        self.totals = None
        self.end = None
        self._base = 0
        self._ended = threading.Event()
        self._listener = get_notification_listener(
            transport, [Target(topic='batch.*')], [self])

    # notification endpoint
    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if not isinstance(payload, dict) or \
                payload.get('batch_id') != self.batch_id:
            return
        if event_type == 'batch.start':
            self.total = payload.get('total')
        elif event_type == 'batch.item':
            self.finished[payload.get('idx')] = payload.get('state')
        elif event_type == 'batch.end':
            self.end = payload
            self._ended.set()

    def _poll(self):
        status = self.api.status(self.batch_id)
        self.totals = status['totals']
        self.total = self.totals['total']
        return status

    def counts(self):
        done = sum(1 for s in self.finished.values() if s == 'done')
        failed = sum(1 for s in self.finished.values() if s != 'done')
        if self.totals:
            done = max(done, self.totals['done'])
            failed = max(failed, self.totals['failed']
                         + self.totals['cancelled'])
        return done, failed

    def watch(self, timeout=None):
        """Show progress until batch.end; return its payload."""
        self._listener.start()
        try:
            return self._watch(timeout)
        finally:
            self._listener.stop()

    def _watch(self, timeout):
        started = time.monotonic()
        status = self._poll()
        self._base = sum(self.counts())  # finished before we watched
        if not status['end_notified'] or status['state'] in ('pending',
                                                             'running'):
            self._show_progress(started, timeout)
        status = self.api.status(self.batch_id, items=self.end is None)
        if self.end is None:  # ended before we listened, or timed out
            self.end = {'batch_id': self.batch_id, 'state': status['state'],
                        'totals': status['totals'],
                        'items': status['items']}
        # The batch's own span, not this watch's: a batch that ended
        # before the watch began took more than the one status call.
        self.end['elapsed'] = status['updated_at'] - status['created_at']
        return self.end

    def _show_progress(self, started, timeout):
        columns = (TextColumn('[bold]%s' % self.batch_id[:12]), BarColumn(),
                   MofNCompleteColumn(), TextColumn('{task.fields[info]}'),
                   TimeElapsedColumn())
        last_poll = time.monotonic()
        with Progress(*columns, console=self.console,
                      transient=False) as bar:
            task = bar.add_task('batch', total=self.total, info='')
            while not self._ended.wait(0.1):
                now = time.monotonic()
                if timeout is not None and now - started > timeout:
                    break
                if now - last_poll > self.resync:
                    last_poll = now
                    status = self._poll()
                    if status['end_notified'] and not self.finished:
                        break
                self._update(bar, task, started)
            self._update(bar, task, started)

    def _update(self, bar, task, started):
        done, failed = self.counts()
        if self.end:
            totals = self.end['totals']
            done = totals['done']
            failed = totals['failed'] + totals['cancelled']
        # only what finished while we watched
        rate = (done + failed - self._base) / max(
            time.monotonic() - started, 1e-6)
        bar.update(task, total=self.total, completed=done + failed,
                   info='done %d  failed %d  %.1f items/s'
                        % (done, failed, rate))


def print_report(end, console, show_failed=20):
    """The summary table and the first failures of a finished batch."""
    totals = end['totals']
    table = Table(title=escape('batch %s: %s' % (end['batch_id'],
                                                 end['state'])))
    for name in ('total', 'done', 'failed', 'cancelled'):
        table.add_column(name, justify='right')
    table.add_column('items/s', justify='right')
    elapsed = end.get('elapsed') or 0
    finished = totals['done'] + totals['failed'] + totals['cancelled']
    rate = '%.1f' % (finished / elapsed) if elapsed > 0 else '-'
    table.add_row(*(str(totals[n]) for n in ('total', 'done', 'failed',
                                             'cancelled')), rate)
    console.print(table)
    items = end.get('items') or []
    failed = [i for i in items if i['state'] != 'done']
    for item in failed[:show_failed]:
        error = item.get('error') or {}
        # URLs and messages are the user's and the servers' text: a
        # '[image] allowed_networks' is not rich markup.
        console.print('  [red]%s[/red] #%s %s: %s' % (
            item['state'], item['idx'], escape(str(item['url'])),
            escape(str(error.get('message', error.get('type',
                                                      'cancelled'))))))
    if len(failed) > show_failed:
        console.print('  ... and %d more' % (len(failed) - show_failed))
    return failed
