"""``rpcmq demo``: the main job on the embedded default, no broker needed.

Everything runs in this process on the ``memory://`` transport: a local
HTTP server of generated images, two image servers (``demo-1``,
``demo-2``) with the image endpoint, the conductor with its SQLite
database, and the local file store. A batch of ``count`` images goes
through exactly the path it takes in production: conductor -> image.fetch
on any server -> image.store pinned to that server -> file store, with
batch.* events driving the progress bar.
"""

import logging
import secrets
import tempfile
import threading

from rich.console import Console

from rpcmq.cmd.progress import BatchWatcher, print_report
from rpcmq.testing.pipeline import Pipeline

__all__ = ['run_demo', 'demo_items']

FORMATS = ('jpg', 'png', 'webp')
#: Deliberately bad items, to show how failures are reported.
BAD_PATHS = ('/status/404', '/html')


def demo_items(images, count):
    items = [{'url': images.url('/img/demo-%04d.%s?kb=%d' % (
        i, FORMATS[i % len(FORMATS)], 20 + i % 5 * 10))}
        for i in range(count - len(BAD_PATHS))]
    items.extend({'url': images.url(path)} for path in BAD_PATHS)
    return items


def run_demo(count=300, store_dir=None, console=None, servers=2,
             dashboard_port=None, after=None):
    """Run the demo batch; return (report payload, store directory).

    What the run needs (spool, database, and the store unless
    ``store_dir`` is given) lives in a temporary directory removed at the
    end: only a ``store_dir`` is kept. With ``dashboard_port`` (0: any
    free port) the dashboard serves the run too, and ``after(end)`` runs
    before anything stops (the CLI prints its report there and keeps the
    dashboard up until Ctrl-C)."""
    console = console or Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix='rpcmq-demo-') as workdir:
        with Pipeline(workdir, servers=servers, store_dir=store_dir) as p:
            console.print('rpcmq demo: %d images from %s through %d image '
                          'servers into %s' % (
                              count, p.images.base_url, servers,
                              store_dir or 'a temporary directory'),
                          markup=False, highlight=False)
            dashboard = None
            if dashboard_port is not None:
                dashboard = _start_dashboard(p, dashboard_port, console)
            try:
                batch_id = p.api.submit(demo_items(p.images, count))
                end = BatchWatcher(p.transport, p.api, batch_id,
                                   console=console).watch(timeout=600)
                if after is not None:
                    after(end)
            finally:
                if dashboard is not None:
                    dashboard.stop()
    return end, store_dir


def _start_dashboard(pipeline, port, console):
    """The dashboard of the demo, on ``port``, signed in by a new token
    (so its cancel and retry buttons work)."""
    from rpcmq.dashboard.app import Dashboard
    token = secrets.token_urlsafe(12)
    pipeline.conf.set_override('auth_token', token, group='dashboard')
    dashboard = Dashboard(pipeline.conf, pipeline.transport,
                          port=port).start()
    # The servers announced themselves before the dashboard listened.
    for announcer in pipeline.announcers.values():
        announcer.announce_now()
    console.print('dashboard: %s (sign in with the token %s)'
                  % (dashboard.url, token), markup=False, highlight=False)
    return dashboard


def main(args):
    # The deliberately bad items would log warnings; the report shows them.
    logging.basicConfig(level=logging.ERROR)
    console = Console(stderr=True, soft_wrap=True)
    after, reported = None, []
    if args.dashboard:
        def after(end):
            reported.append(report(end, args.dir, console))
            console.print('the dashboard stays up until Ctrl-C',
                          markup=False, highlight=False)
            threading.Event().wait()  # until Ctrl-C
    try:
        end, store_dir = run_demo(
            args.count, args.dir, console,
            dashboard_port=args.dashboard_port if args.dashboard else None,
            after=after)
    except KeyboardInterrupt:
        if reported:  # the batch had ended; Ctrl-C stopped the dashboard
            console.print('rpcmq demo: stopped', markup=False,
                          highlight=False)
            return reported[0]
        # run_demo's with-blocks have stopped everything and removed the
        # temporary directory by now.
        console.print('rpcmq demo: interrupted; the batch is stopped%s'
                      % ('; the images stored so far are under %s' % args.dir
                         if args.dir else ' and its temporary directory '
                         'removed'), markup=False, highlight=False)
        return 130
    return report(end, store_dir, console)


def report(end, store_dir, console):
    """The report of the finished batch; the demo's exit code."""
    failed = print_report(end, console)
    if store_dir:
        console.print('stored %d images under %s' % (end['totals']['done'],
                                                     store_dir),
                      markup=False, highlight=False)
    else:
        console.print('stored %d images in a temporary directory, removed '
                      'at the end (rpcmq demo --dir DIR keeps them)'
                      % end['totals']['done'])
    console.print('(%d deliberately bad URLs show how failures are '
                  'reported)' % len(BAD_PATHS))
    return 0 if len(failed) == len(BAD_PATHS) else 1
