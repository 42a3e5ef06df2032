"""Statements the batch store runs inside its transactions: batch state
and locking, conditional item moves, loading rows, summaries."""

import time

import sqlalchemy as sa

from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.schema import (
    ACTIVE,
    DONE,
    DONE_WITH_FAILURES,
    ITEM_STATES,
    RUNNING,
    ItemRow,
    batches,
    items,
)

__all__ = ['batch_state', 'count', 'error_dict', 'load_items', 'move_item',
           'now_or', 'other_items', 'settle_batch', 'shown_state',
           'state_filter', 'summaries']

MAX_ERROR_CHARS = 2000


def now_or(now):
    """``now`` as a float, or the current time if None."""
    return time.time() if now is None else float(now)


def other_items(batch_id, stored, submitted):
    """InvalidBatch for a batch id that exists with other items."""
    return InvalidBatch(reason=(
        'batch id %r already exists with other items (%d items; this '
        'submit has %d): submit them under a new batch id, or the same '
        'items to resume this one' % (batch_id, stored, submitted)))


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


_STATE = sa.select(batches.c.state).where(
    batches.c.id == sa.bindparam('b_batch'))
_STATE_LOCKED = _STATE.with_for_update()
_SETTLE = sa.update(batches).where(
    batches.c.id == sa.bindparam('b_batch')).values(
    updated_at=sa.bindparam('b_now'),
    state=sa.case((sa.and_(batches.c.state.in_(ACTIVE),
                           batches.c.n_pending + batches.c.n_running == 0),
                   DONE), else_=batches.c.state))
_COUNTS = {}  # (source, target) -> the statement that moves counts


def batch_state(conn, batch_id, lock=True):
    """Return the batch state, locking its row (PostgreSQL) by default.

    Item transitions lock the batch row first, then items, so they
    serialize with cancel() and never deadlock each other.
    Raises BatchNotFound for an unknown id.
    """
    state = conn.execute(_STATE_LOCKED if lock else _STATE,
                         {'b_batch': batch_id}).scalar()
    if state is None:
        raise BatchNotFound(batch_id=batch_id)
    return state


def settle_batch(conn, batch_id, now):
    """Touch the batch; mark it done once no item needs work (its counts
    say so: no item is read)."""
    conn.execute(_SETTLE, {'b_batch': batch_id, 'b_now': now})


def move_item(conn, batch_id, idx, attempt, *where, **values):
    """Apply ``values`` to the running ``attempt`` of an item (and, when
    it changes state, to its batch's counts).

    Returns True if it did, False if the item is no longer running that
    attempt (finished, requeued or claimed again).
    """
    col = items.c
    moved = conn.execute(sa.update(items).where(
        col.batch_id == batch_id, col.idx == idx, col.state == RUNNING,
        col.attempts == attempt, *where).values(**values)).rowcount == 1
    if moved and values.get('state', RUNNING) != RUNNING:
        count(conn, batch_id, RUNNING, values['state'], 1)
    return moved


def count(conn, batch_id, source, target, n):
    """Move ``n`` items of the batch's counts from state ``source`` to
    ``target`` (None: items added, or gone)."""
    if not n or source == target:
        return
    statement = _COUNTS.get((source, target))
    if statement is None:
        n_items, values = sa.bindparam('b_n'), {}
        if source is not None:
            values['n_' + source] = batches.c['n_' + source] - n_items
        if target is not None:
            values['n_' + target] = batches.c['n_' + target] + n_items
        statement = _COUNTS[source, target] = sa.update(batches).where(
            batches.c.id == sa.bindparam('b_batch')).values(**values)
    conn.execute(statement, {'b_batch': batch_id, 'b_n': n})


def load_items(conn, *where, limit=None, offset=None):
    """Items matching ``where`` as ``ItemRow``, by batch and index."""
    query = sa.select(items).where(*where).order_by(items.c.batch_id,
                                                    items.c.idx)
    return [ItemRow.from_row(row)
            for row in conn.execute(query.limit(limit).offset(offset))]


def shown_state(state, n_failed):
    """The state a summary shows: ``done_with_failures`` for a ``done``
    batch with failed items."""
    return DONE_WITH_FAILURES if state == DONE and n_failed else state


def state_filter(state):
    """Where-clauses for batches a summary shows in ``state`` (one of
    ``SHOWN_STATES``, already checked)."""
    if state == DONE_WITH_FAILURES:
        return (batches.c.state == DONE, batches.c.n_failed > 0)
    if state == DONE:
        return (batches.c.state == DONE, batches.c.n_failed == 0)
    return (batches.c.state == state,)


def summaries(conn, *where, newest=False, limit=None, offset=None):
    """Batches matching ``where`` as summary dicts with per-state ``totals``
    (the counts kept on the batch row: no item is read).

    Oldest first, or newest first with ``newest=True``.
    """
    order = ((batches.c.created_at.desc(), batches.c.id.desc()) if newest
             else (batches.c.created_at, batches.c.id))
    rows = conn.execute(sa.select(batches).where(*where).order_by(*order)
                        .limit(limit).offset(offset))
    return [{'batch_id': row.id, 'state': shown_state(row.state,
                                                      row.n_failed),
             'created_at': row.created_at, 'updated_at': row.updated_at,
             'options': row.options or {},
             'start_notified': bool(row.start_notified),
             'end_notified': bool(row.end_notified),
             'totals': dict({state: row._mapping['n_' + state]
                             for state in ITEM_STATES}, total=row.total)}
            for row in rows]
