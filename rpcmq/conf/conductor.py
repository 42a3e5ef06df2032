"""Options of the batch conductor: its database, windows, retries, topics."""

import os
import tempfile

from oslo_config import cfg

DEFAULT_CONNECTION = 'sqlite:///' + os.path.join(
    tempfile.gettempdir(), 'rpcmq', 'conductor.sqlite')

CONDUCTOR_OPTS = [
    cfg.StrOpt('connection', default=DEFAULT_CONNECTION, secret=True,
               sample_default='sqlite:///<tmpdir>/rpcmq/conductor.sqlite',
               help='SQLAlchemy URL of the database that keeps batches and '
                    'items: sqlite:///path/file.sqlite (directory created, '
                    'WAL mode) or postgresql://user:pass@host:5432/db '
                    '(needs psycopg2). Point it at a durable path: the '
                    'default lives in the temporary directory.'),
    cfg.BoolOpt('auto_upgrade_db', default=True,
                help='Create the database schema, or upgrade it to this '
                     "release's, when the conductor starts (conductors "
                     'starting together take turns). With false a conductor '
                     'refuses to start on an outdated schema; run '
                     'rpcmq-conductor --config-file ... --upgrade-db.'),
    cfg.IntOpt('max_inflight', default=64, min=1,
               help='Items the conductor works on at once, over all '
                    'batches.'),
    cfg.IntOpt('max_inflight_per_batch', default=32, min=1,
               help='Items of one batch worked on at once, so one large '
                    'batch cannot starve the others.'),
    cfg.IntOpt('item_retries', default=3, min=0,
               help='Retries of a failed item after its first attempt; an '
                    'item is tried at most item_retries + 1 times.'),
    cfg.FloatOpt('retry_backoff', default=2.0, min=0,
                 help='Seconds before the first retry of an item; each '
                      'further retry waits twice as long.'),
    cfg.FloatOpt('retry_backoff_max', default=60.0, min=0,
                 help='Longest wait in seconds between two attempts of an '
                      'item.'),
    cfg.IntOpt('fetch_timeout', default=120, min=1,
               help='Seconds the conductor waits for image.fetch to reply.'),
    cfg.IntOpt('store_timeout', default=120, min=1,
               help='Seconds the conductor waits for image.store to reply.'),
    cfg.IntOpt('lease_seconds', default=300, min=1,
               help='Seconds an attempt may run before the conductor gives '
                    'up on it and requeues the item; keep it above '
                    'fetch_timeout + store_timeout.'),
    cfg.StrOpt('topic', default='conductor',
               help='Topic the conductor serves batch.* calls on. '
                    'Deployments that share a broker vhost need different '
                    'topics (queues are named after topics).'),
    cfg.StrOpt('image_topic', default='image',
               help='Topic of the image servers the conductor calls '
                    'image.fetch on; image.store goes to '
                    '<image_topic>.<server that fetched>.'),
    cfg.FloatOpt('heartbeat_interval', default=2.0, min=0.1,
                 help='Seconds between two heartbeats of a conductor in the '
                      'database; peers on the same database look for dead '
                      'conductors as often.'),
    cfg.FloatOpt('heartbeat_timeout', default=10.0, min=1.0,
                 help='Seconds without a heartbeat after which a conductor '
                      'is taken for dead and a live peer takes back its '
                      'running items (at least twice heartbeat_interval).'),
    cfg.FloatOpt('poll_interval', default=0.2, min=0.01,
                 help='Seconds between two passes of the scheduler over the '
                      'database when nothing woke it up earlier.'),
]


def list_opts():
    return [('conductor', CONDUCTOR_OPTS)]
