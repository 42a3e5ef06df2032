"""The conductor's tables and rows (the newest revision of
``migrations/``), and the states batches and items go through.

Every timestamp is a float of seconds since the epoch (``time.time()``), the
same on SQLite and PostgreSQL, so ``now`` arguments compare without time
zones.
"""

from typing import NamedTuple

import sqlalchemy as sa

__all__ = [
    'ACTIVE', 'BATCH_STATES', 'CANCELLED', 'DONE', 'DONE_WITH_FAILURES',
    'FAILED', 'OPEN', 'PENDING', 'RUNNING', 'SHOWN_STATES', 'TERMINAL',
    'TOTALS', 'ItemRow', 'batches', 'conductors', 'items', 'metadata',
]

PENDING, RUNNING, DONE = 'pending', 'running', 'done'
FAILED, CANCELLED = 'failed', 'cancelled'
#: A batch whose items are still being added in chunks: not run yet.
OPEN = 'open'
#: Item states that still need work; a batch ends when none is left.
ACTIVE = (PENDING, RUNNING)
TERMINAL = (DONE, FAILED, CANCELLED)
BATCH_STATES = (OPEN, PENDING, RUNNING, DONE, CANCELLED)
#: What summaries, ``batch.end`` and the CLI call a ``done`` batch some of
#: whose items failed (the row keeps ``done``: no item is left to run).
DONE_WITH_FAILURES = 'done_with_failures'
#: States a summary can show, and ``list_batches`` filters on.
SHOWN_STATES = BATCH_STATES + (DONE_WITH_FAILURES,)
#: Keys of the ``totals`` dict of a batch summary.
#: Every state an item can be in.
ITEM_STATES = ACTIVE + TERMINAL
TOTALS = ('total',) + ITEM_STATES

metadata = sa.MetaData()
_json = sa.JSON(none_as_null=True)

batches = sa.Table(
    'batches', metadata,
    sa.Column('id', sa.String(64), primary_key=True),
    sa.Column('created_at', sa.Double, nullable=False),
    sa.Column('updated_at', sa.Double, nullable=False),
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('total', sa.Integer, nullable=False),
    sa.Column('options', _json),
    sa.Column('start_notified', sa.Boolean, nullable=False, default=False),
    sa.Column('end_notified', sa.Boolean, nullable=False, default=False),
    # SHA-256 of the validated items (migration 0004; see items_digest).
    sa.Column('digest', sa.String(64)),
    # items per state (migration 0005), kept by every transition.
    *[sa.Column('n_' + state, sa.Integer, nullable=False, default=0,
                server_default='0')
      for state in ('pending', 'running', 'done', 'failed', 'cancelled')],
    # claim: active batches oldest first; list_batches: newest first.
    sa.Index('ix_batches_state_created', 'state', 'created_at'),
    # unfinished_batches / finished_batches_to_end.
    sa.Index('ix_batches_end_notified', 'end_notified', 'created_at'),
    # list_batches without a state: the newest first (migration 0007).
    sa.Index('ix_batches_created', 'created_at', 'id'),
)

items = sa.Table(
    'items', metadata,
    sa.Column('batch_id', sa.String(64),
              sa.ForeignKey('batches.id', ondelete='CASCADE'),
              primary_key=True),
    sa.Column('idx', sa.Integer, primary_key=True, autoincrement=False),
    sa.Column('url', sa.Text, nullable=False),
    sa.Column('key', sa.Text),
    sa.Column('name', sa.Text),
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('attempts', sa.Integer, nullable=False, default=0),
    sa.Column('server', sa.String(255)),
    sa.Column('spool_id', sa.String(255)),
    sa.Column('lease_until', sa.Double),
    sa.Column('started_at', sa.Double),
    sa.Column('next_attempt_at', sa.Double, nullable=False),
    sa.Column('result', _json),
    sa.Column('error', _json),
    sa.Column('notified', sa.Boolean, nullable=False, default=False),
    sa.Column('updated_at', sa.Double, nullable=False),
    # attempts when the user last retried the item (migration 0002).
    sa.Column('retry_base', sa.Integer, nullable=False, default=0,
              server_default='0'),
    # the conductor running it (migration 0003).
    sa.Column('owner', sa.String(64)),
    sa.Index('ix_items_owner_state', 'owner', 'state'),
    # claim (due pending items of one batch, in order), per-batch counts.
    sa.Index('ix_items_batch_state', 'batch_id', 'state', 'idx'),
    # in-flight counts and expire_leases.
    sa.Index('ix_items_state_lease', 'state', 'lease_until'),
    # unnotified_items, finished_batches_to_end (finished and unsent only).
    sa.Index('ix_items_unnotified', 'notified', 'state', 'batch_id', 'idx'),
)


conductors = sa.Table(
    'conductors', metadata,
    sa.Column('id', sa.String(64), primary_key=True),
    sa.Column('host', sa.String(255), nullable=False),
    sa.Column('pid', sa.Integer, nullable=False),
    sa.Column('started_at', sa.Double, nullable=False),
    sa.Column('heartbeat_at', sa.Double, nullable=False),
)


class ItemRow(NamedTuple):
    """One item as stored; ``attempts`` numbers the current attempt, over
    the item's whole life (retries included)."""

    batch_id: str
    idx: int
    url: str
    key: str | None
    name: str | None
    state: str
    attempts: int
    server: str | None
    spool_id: str | None
    lease_until: float | None
    started_at: float | None
    next_attempt_at: float
    result: dict | None
    error: dict | None
    notified: bool
    updated_at: float
    retry_base: int = 0
    owner: str | None = None

    @property
    def tries(self):
        """Attempts since the user last retried the item: what the retry
        budget counts (``attempts`` itself never goes back: it fences)."""
        return self.attempts - self.retry_base

    @classmethod
    def from_row(cls, row):
        mapping = row._mapping  # a new view at every access: once
        return cls._make([mapping[name] for name in cls._fields])

    def outcome(self):
        """The public view of the item, as status() and batch.end show."""
        return {'idx': self.idx, 'url': self.url, 'key': self.key,
                'name': self.name, 'state': self.state,
                'attempts': self.attempts, 'error': self.error,
                'result': self.result}
