"""The scheduler's step on the batch store: complete the items that
finished and claim due ones, in one transaction.

Claimers are serialized (the write lock on SQLite, an advisory lock on
PostgreSQL, taken before any batch row) so the in-flight windows hold
even when two conductors claim at once, and two conductors' steps never
deadlock. Completions name the attempt they belong to and apply only
while it still runs, so a late or repeated reply never counts twice.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from rpcmq.conductor import models as m

__all__ = ['Steps']

BC, IC = m.batches.c, m.items.c  # columns
_now = m.now_or

#: pg_advisory_xact_lock key that serializes claimers on PostgreSQL.
CLAIM_LOCK_KEY = 0x72706D71

# claim()'s statements, built once (SQLAlchemy builds a statement in
# about as much time as the database takes to run these).
_CLAIM_LOCK = sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK_KEY))
_RUNNING = sa.select(IC.batch_id, sa.func.count()).where(
    IC.state == m.RUNNING).group_by(IC.batch_id)
_ACTIVE = sa.select(BC.id).where(
    BC.state.in_(m.ACTIVE),
    sa.exists().where(IC.batch_id == BC.id, IC.state == m.PENDING,
                      IC.next_attempt_at <= sa.bindparam('b_now')),
).order_by(BC.created_at, BC.id)
_DUE = sa.select(IC.idx).where(
    IC.batch_id == sa.bindparam('b_batch'), IC.state == m.PENDING,
    IC.next_attempt_at <= sa.bindparam('b_now'),
).order_by(IC.idx).limit(sa.bindparam('b_limit'))
_MINE = (IC.batch_id == sa.bindparam('b_batch'),
         IC.idx.in_(sa.bindparam('b_idxs', expanding=True)))
_START = sa.update(m.items).where(*_MINE, IC.state == m.PENDING).values(
    state=m.RUNNING, attempts=IC.attempts + 1,
    lease_until=sa.bindparam('b_lease'), started_at=sa.bindparam('b_now'),
    owner=sa.bindparam('b_owner'), updated_at=sa.bindparam('b_now'))
_STARTED = sa.update(m.batches).where(BC.id == sa.bindparam('b_batch')).values(
    state=m.RUNNING, updated_at=sa.bindparam('b_now'),
    n_pending=BC.n_pending - sa.bindparam('b_n'),
    n_running=BC.n_running + sa.bindparam('b_n'))
_LOAD = sa.select(m.items).where(*_MINE, IC.state == m.RUNNING).order_by(
    IC.idx)

#: Completes the running attempt of one item; SQLite runs it once per batch
#: with a parameter set per item (in-process, as cheap as one statement).
_COMPLETE = sa.update(m.items).where(
    IC.batch_id == sa.bindparam('b_batch'), IC.idx == sa.bindparam('b_idx'),
    IC.state == m.RUNNING, IC.attempts == sa.bindparam('b_attempt'),
).values(state=m.DONE, result=sa.bindparam('b_result'), error=None,
         lease_until=None, updated_at=sa.bindparam('b_now'))
#: The outcomes ``_complete`` applies on PostgreSQL, a row per item from
#: three arrays: one round trip whatever their number (psycopg2 runs an
#: executemany as one statement per row), and one statement SQLAlchemy
#: compiles once (a VALUES list built per step had no cache key: it was
#: compiled again every step).
_OUTCOMES = sa.func.unnest(
    sa.bindparam('b_idxs', type_=pg.ARRAY(sa.Integer)),
    sa.bindparam('b_attempts', type_=pg.ARRAY(sa.Integer)),
    sa.bindparam('b_results', type_=pg.ARRAY(sa.Text)),
).table_valued('idx', 'attempt', 'result', name='outcome').render_derived()
_COMPLETE_PG = sa.update(m.items).where(
    IC.batch_id == sa.bindparam('b_batch'), IC.idx == _OUTCOMES.c.idx,
    IC.state == m.RUNNING, IC.attempts == _OUTCOMES.c.attempt,
).values(state=m.DONE,
         result=sa.cast(_OUTCOMES.c.result, m.items.c.result.type),
         error=None, lease_until=None, updated_at=sa.bindparam('b_now'))


def _complete_params(dialect, batch_id, rows, now):
    """``_COMPLETE_PG``'s parameters for ``rows`` (``(idx, attempt,
    result)``); results as the JSON text the column's type would bind."""
    to_json = m.items.c.result.type.bind_processor(dialect)
    return {'b_batch': batch_id, 'b_now': now,
            'b_idxs': [idx for idx, _, _ in rows],
            'b_attempts': [attempt for _, attempt, _ in rows],
            'b_results': [to_json(result) if to_json else result
                          for _, _, result in rows]}


class Steps:
    """Mixed into BatchStore: uses its ``_begin`` and ``is_postgres``."""

    def claim(self, limit, batch_limit=None, now=None, lease_seconds=300,
              owner=None):
        """Start due pending items; return them as running ``ItemRow``.

        Takes items whose ``next_attempt_at <= now``, oldest batch first and
        in index order, while fewer than ``limit`` items run in total and
        fewer than ``batch_limit`` (None: no limit) in their batch. Each
        claimed item gets ``attempts + 1`` and ``lease_until = now +
        lease_seconds`` and ``owner`` (the claiming conductor's id); its
        ``server`` and ``spool_id`` keep the values of the previous attempt
        until ``record_fetched`` replaces them.
        """
        return self.step((), limit, batch_limit, now, lease_seconds,
                         owner)[1]

    def step(self, outcomes, limit, batch_limit=None, now=None,
             lease_seconds=300, owner=None):
        """``complete_many(outcomes)``, then ``claim(...)``, in one
        transaction: one scheduler step. Returns ``(completed, claimed)``.

        Claimers are serialized first (the advisory lock on PostgreSQL,
        the write lock on SQLite), before any batch row is locked, so two
        conductors' steps never deadlock.
        """
        now = _now(now)
        claimed = []
        with self._begin() as conn:
            if self.is_postgres:
                conn.execute(_CLAIM_LOCK)
            done = self._complete_many(conn, outcomes, now)
            running = dict(conn.execute(_RUNNING).all())
            room = limit - sum(running.values())
            active = conn.execute(_ACTIVE, {'b_now': now}).scalars().all()
            for batch_id in active:
                if room <= 0:
                    break
                quota = room if batch_limit is None else min(
                    room, batch_limit - running.get(batch_id, 0))
                if quota <= 0:
                    continue
                due = conn.execute(_DUE, {'b_batch': batch_id, 'b_now': now,
                                          'b_limit': quota}).scalars().all()
                if not due or m.batch_state(conn, batch_id) not in m.ACTIVE:
                    continue
                mine = {'b_batch': batch_id, 'b_idxs': due}
                started = conn.execute(_START, dict(
                    mine, b_now=now, b_lease=now + lease_seconds,
                    b_owner=owner)).rowcount
                conn.execute(_STARTED, {'b_batch': batch_id, 'b_now': now,
                                        'b_n': started})
                room -= started
                claimed += [m.ItemRow.from_row(row)
                            for row in conn.execute(_LOAD, mine)]
        return done, claimed

    def complete(self, batch_id, idx, attempt, result, now=None):
        """Mark the running attempt done with ``result``; True the 1st time.

        Completions of a running item still count after ``cancel``.
        """
        now = _now(now)
        with self._begin() as conn:
            m.batch_state(conn, batch_id)
            return self._complete(conn, batch_id, [(idx, attempt, result)],
                                  now) == 1

    def complete_many(self, outcomes, now=None):
        """``complete`` for many ``(batch_id, idx, attempt, result)`` in
        one transaction (their batches locked in id order); return how many
        completed now. Outcomes of batches that no longer exist are
        dropped."""
        with self._begin() as conn:
            return self._complete_many(conn, outcomes, _now(now))

    def _complete_many(self, conn, outcomes, now):
        by_batch = {}
        for batch_id, idx, attempt, result in outcomes:
            by_batch.setdefault(batch_id, []).append((idx, attempt, result))
        done = 0
        for batch_id, rows in sorted(by_batch.items()):
            try:
                m.batch_state(conn, batch_id)
            except m.BatchNotFound:
                continue
            done += self._complete(conn, batch_id, rows, now)
        return done

    @staticmethod
    def _complete(conn, batch_id, rows, now):
        """One statement for the batch's completions (its row is locked)."""
        if conn.dialect.name == 'postgresql':
            moved = conn.execute(_COMPLETE_PG, _complete_params(
                conn.dialect, batch_id, rows, now))
        else:
            moved = conn.execute(_COMPLETE, [
                {'b_batch': batch_id, 'b_idx': idx, 'b_attempt': attempt,
                 'b_result': result, 'b_now': now}
                for idx, attempt, result in rows])
        moved = moved.rowcount
        if moved:
            m.count(conn, batch_id, m.RUNNING, m.DONE, moved)
            m.settle_batch(conn, batch_id, now)
        return moved
