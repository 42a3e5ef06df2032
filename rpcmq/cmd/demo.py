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
import tempfile

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


def run_demo(count=300, store_dir=None, console=None, servers=2):
    """Run the demo batch; return (report payload, store directory).

    What the run needs (spool, database, and the store unless
    ``store_dir`` is given) lives in a temporary directory removed at the
    end: only a ``store_dir`` is kept."""
    console = console or Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix='rpcmq-demo-') as workdir:
        with Pipeline(workdir, servers=servers, store_dir=store_dir) as p:
            console.print('rpcmq demo: %d images from %s through %d image '
                          'servers into %s' % (
                              count, p.images.base_url, servers,
                              store_dir or 'a temporary directory'),
                          markup=False, highlight=False)
            batch_id = p.api.submit(demo_items(p.images, count))
            end = BatchWatcher(p.transport, p.api, batch_id,
                               console=console).watch(timeout=600)
    return end, store_dir


def main(args):
    # The deliberately bad items would log warnings; the report shows them.
    logging.basicConfig(level=logging.ERROR)
    console = Console(stderr=True, soft_wrap=True)
    try:
        end, store_dir = run_demo(args.count, args.dir, console)
    except KeyboardInterrupt:
        # run_demo's with-blocks have stopped everything and removed the
        # temporary directory by now.
        console.print('rpcmq demo: interrupted; the batch is stopped%s'
                      % ('; the images stored so far are under %s' % args.dir
                         if args.dir else ' and its temporary directory '
                         'removed'), markup=False, highlight=False)
        return 130
    failed = print_report(end, console)
    if store_dir:
        console.print('stored %d images under %s' % (end['totals']['done'],
                                                     store_dir),
                      markup=False, highlight=False)
    else:
        console.print('stored %d images in a temporary directory, removed '
                      'now (rpcmq demo --dir DIR keeps them)'
                      % end['totals']['done'])
    console.print('(%d deliberately bad URLs show how failures are '
                  'reported)' % len(BAD_PATHS))
    return 0 if len(failed) == len(BAD_PATHS) else 1
