"""Tables, rows, validation and engine of the conductor's batch state.

Every timestamp is a float of seconds since the epoch (``time.time()``), the
same on SQLite and PostgreSQL, so ``now`` arguments compare without time
zones.
"""

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import threading
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.storage.base import validate_key
from rpcmq.storage.errors import InvalidKey

__all__ = [
    'ACTIVE', 'BATCH_STATES', 'CANCELLED', 'DONE', 'FAILED', 'PENDING',
    'RUNNING', 'TERMINAL', 'TOTALS', 'ItemRow', 'batch_state', 'batches',
    'conductors', 'error_dict', 'items', 'items_digest', 'load_items',
    'make_engine', 'metadata',
    'move_item', 'settle_batch', 'summaries', 'validate_batch_id',
    'validate_items', 'validate_options', 'validate_state',
]

PENDING, RUNNING, DONE = 'pending', 'running', 'done'
FAILED, CANCELLED = 'failed', 'cancelled'
#: Item states that still need work; a batch ends when none is left.
ACTIVE = (PENDING, RUNNING)
TERMINAL = (DONE, FAILED, CANCELLED)
BATCH_STATES = (PENDING, RUNNING, DONE, CANCELLED)
#: Keys of the ``totals`` dict of a batch summary.
TOTALS = ('total',) + ACTIVE + TERMINAL

ITEM_FIELDS = ('url', 'key', 'name')
MAX_ERROR_CHARS = 2000
#: Seconds a SQLite writer waits for the write lock before failing.
SQLITE_POOL_SIZE = 4
SQLITE_BUSY_TIMEOUT = 30.0
BATCH_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$')

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
    # claim: active batches oldest first; list_batches: newest first.
    sa.Index('ix_batches_state_created', 'state', 'created_at'),
    # unfinished_batches / finished_batches_to_end.
    sa.Index('ix_batches_end_notified', 'end_notified', 'created_at'),
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
    # unnotified_items.
    sa.Index('ix_items_unnotified', 'notified', 'batch_id', 'idx'),
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
        return cls(**{name: row._mapping[name] for name in cls._fields})

    def outcome(self):
        """The public view of the item, as status() and batch.end show."""
        return {'idx': self.idx, 'url': self.url, 'key': self.key,
                'name': self.name, 'state': self.state,
                'attempts': self.attempts, 'error': self.error,
                'result': self.result}


def _bad(reason):
    return InvalidBatch(reason=reason)


def _optional_str(item, field, where):
    value = item.get(field)
    if value is not None and not isinstance(value, str):
        kind = type(value).__name__
        raise _bad(f'{where}: {field!r} must be a str or null, not {kind}')
    return value


def _validate_item(item, idx):
    where = f'item {idx}'
    if isinstance(item, str):
        item = {'url': item}
    if not isinstance(item, dict):
        kind = type(item).__name__
        raise _bad(f'{where} must be an object like {{"url": ...}}, '
                   f'not {kind}')
    unknown = sorted(set(item) - set(ITEM_FIELDS))
    if unknown:
        names = ', '.join(map(repr, unknown))
        raise _bad(f'{where} has unknown field(s) {names}; '
                   'allowed: url, key, name')
    url = item.get('url')
    if not isinstance(url, str) or not url.strip():
        raise _bad(f'{where} needs "url", a non-empty str, not {url!r}')
    key = _optional_str(item, 'key', where)
    if key is not None:
        try:
            validate_key(key)
        except InvalidKey as exc:
            raise _bad(f'{where}: {exc}') from None
    return {'url': url.strip(), 'key': key,
            'name': _optional_str(item, 'name', where)}


def validate_items(items):
    """Return the items as ``[{url, key, name}]`` or raise InvalidBatch.

    A bare str is taken as ``{"url": str}``. Keys must be unique within the
    batch, or two items would overwrite each other's object.
    """
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, '__len__'):
        raise _bad('items must be a list of {"url", "key"?, "name"?}, '
                   f'not {type(items).__name__}')
    if not items:
        raise _bad('a batch needs at least one item')
    rows = [_validate_item(item, idx) for idx, item in enumerate(items)]
    seen = {}
    for idx, row in enumerate(rows):
        key = row['key']
        if key is not None and seen.setdefault(key, idx) != idx:
            raise _bad(f'items {seen[key]} and {idx} both use key {key!r}')
    return rows


def items_digest(rows):
    """SHA-256 (hex) of validated item rows, the same for the same items
    in the same order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row['url'], row['key'], row['name']],
                                 separators=(',', ':')).encode('utf-8'))
        digest.update(b'\n')
    return digest.hexdigest()


def validate_batch_id(batch_id):
    if not isinstance(batch_id, str) or not BATCH_ID_RE.match(batch_id):
        raise _bad(f'batch id {batch_id!r} must be 1-64 letters, digits '
                   'or "_.:-", starting with a letter or digit')
    return batch_id


def validate_options(options):
    if options is None:
        return {}
    if not isinstance(options, dict):
        kind = type(options).__name__
        raise _bad(f'options must be an object, not {kind}')
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise _bad(f'options must be JSON-serializable: {exc}') from None
    return options


def validate_state(state):
    if state not in BATCH_STATES:
        raise _bad(f'unknown batch state {state!r}; use one of '
                   + ', '.join(BATCH_STATES))
    return state


def error_dict(error):
    """Normalize an exception, str or dict to ``{type, message}``.

    Messages are cut to MAX_ERROR_CHARS so a traceback cannot bloat a row.
    """
    if isinstance(error, BaseException):
        kind, message = type(error).__name__, str(error)
    elif isinstance(error, dict):
        kind, message = error.get('type') or 'Error', error.get('message', '')
    else:
        kind, message = 'Error', error
    return {'type': str(kind), 'message': str(message)[:MAX_ERROR_CHARS]}


# -- statements run inside a transaction ----------------------------------

def batch_state(conn, batch_id, lock=True):
    """Return the batch state, locking its row (PostgreSQL) by default.

    Item transitions lock the batch row first, then items, so they
    serialize with cancel() and never deadlock each other.
    Raises BatchNotFound for an unknown id.
    """
    query = sa.select(batches.c.state).where(batches.c.id == batch_id)
    state = conn.execute(query.with_for_update() if lock else query).scalar()
    if state is None:
        raise BatchNotFound(batch_id=batch_id)
    return state


def settle_batch(conn, batch_id, now):
    """Touch the batch; mark it done once no item needs work."""
    col = batches.c
    busy = sa.exists().where(items.c.batch_id == batch_id,
                             items.c.state.in_(ACTIVE))
    conn.execute(sa.update(batches).where(col.id == batch_id).values(
        updated_at=now,
        state=sa.case((sa.and_(col.state.in_(ACTIVE), ~busy), DONE),
                      else_=col.state)))


def move_item(conn, batch_id, idx, attempt, *where, **values):
    """Apply ``values`` to the running ``attempt`` of an item.

    Returns True if it did, False if the item is no longer running that
    attempt (finished, requeued or claimed again).
    """
    col = items.c
    return conn.execute(sa.update(items).where(
        col.batch_id == batch_id, col.idx == idx, col.state == RUNNING,
        col.attempts == attempt, *where).values(**values)).rowcount == 1


def load_items(conn, *where, limit=None, offset=None):
    """Items matching ``where`` as ``ItemRow``, by batch and index."""
    query = sa.select(items).where(*where).order_by(items.c.batch_id,
                                                    items.c.idx)
    return [ItemRow.from_row(row)
            for row in conn.execute(query.limit(limit).offset(offset))]


def summaries(conn, *where, newest=False, limit=None, offset=None,
              chunk=500):
    """Batches matching ``where`` as summary dicts with per-state ``totals``.

    Oldest first, or newest first with ``newest=True``.
    """
    order = ((batches.c.created_at.desc(), batches.c.id.desc()) if newest
             else (batches.c.created_at, batches.c.id))
    rows = conn.execute(sa.select(batches).where(*where).order_by(*order)
                        .limit(limit).offset(offset))
    out = {row.id: {'batch_id': row.id, 'state': row.state,
                    'created_at': row.created_at,
                    'updated_at': row.updated_at,
                    'options': row.options or {},
                    'start_notified': bool(row.start_notified),
                    'end_notified': bool(row.end_notified),
                    'totals': dict(dict.fromkeys(TOTALS, 0),
                                   total=row.total)}
           for row in rows}
    ids = list(out)
    for start in range(0, len(ids), chunk):
        counts = conn.execute(
            sa.select(items.c.batch_id, items.c.state, sa.func.count())
            .where(items.c.batch_id.in_(ids[start:start + chunk]))
            .group_by(items.c.batch_id, items.c.state))
        for batch_id, state, count in counts:
            out[batch_id]['totals'][state] = count
    return list(out.values())


# -- engine -----------------------------------------------------------------

def _sqlite_on_connect(dbapi_conn, _record):
    # Let the "begin" hook below issue BEGIN IMMEDIATE instead of the
    # driver's deferred BEGIN: a deferred transaction that reads and then
    # writes can fail at once with "database is locked" under WAL.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ('journal_mode=WAL', 'synchronous=NORMAL',
                   'foreign_keys=ON',
                   f'busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}'):
        cursor.execute('PRAGMA ' + pragma)
    cursor.close()


def _sqlite_on_begin(conn):
    conn.exec_driver_sql('BEGIN IMMEDIATE')


def make_engine(url, echo=False):
    """Return ``(engine, lock)`` for a SQLAlchemy URL.

    SQLite files run in WAL mode with ``synchronous=NORMAL`` (a committed
    transaction survives ``kill -9``), a busy timeout, and connections
    usable from any thread; their directory is created. ``sqlite://`` (in
    memory) shares one connection, so ``lock`` is a lock every transaction
    must hold; otherwise it is a no-op context manager.
    """
    url = sa.make_url(url)
    if url.drivername == 'postgresql' and importlib.util.find_spec('psycopg2'):
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; rpcmq's
        # [postgres] extra installs psycopg2.
        url = url.set(drivername='postgresql+psycopg2')
    if url.get_backend_name() != 'sqlite':
        return (sa.create_engine(url, echo=echo, pool_pre_ping=True),
                contextlib.nullcontext())
    kwargs = {'connect_args': {'check_same_thread': False,
                               'timeout': SQLITE_BUSY_TIMEOUT}}
    lock = contextlib.nullcontext()
    if url.database in (None, '', ':memory:'):
        kwargs['poolclass'] = StaticPool
        lock = threading.RLock()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(url.database)),
                    exist_ok=True)
        # SQLite runs one writer at a time anyway; every extra connection
        # only adds its own page cache (up to 2 MB), which made memory grow
        # with the database. Callers queue for these few instead.
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=0,
                      pool_timeout=SQLITE_BUSY_TIMEOUT)
    engine = sa.create_engine(url, echo=echo, **kwargs)
    sa.event.listen(engine, 'connect', _sqlite_on_connect)
    sa.event.listen(engine, 'begin', _sqlite_on_begin)
    return engine, lock
