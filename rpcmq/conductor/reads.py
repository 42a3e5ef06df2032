"""Reading batches and items for users and the scheduler (part of
``BatchStore``): summaries, outcomes page by page, single items."""

import sqlalchemy as sa

from rpcmq.conductor import models as m
from rpcmq.conductor.errors import BatchNotFound

__all__ = ['BatchReads']

BC, IC = m.batches.c, m.items.c


class BatchReads:
    """Mixed into BatchStore: uses its ``_read`` (never waits for a
    writer)."""

    def _batches(self, *where, newest=False, limit=None, offset=None):
        with self._read() as conn:
            return m.summaries(conn, *where, newest=newest, limit=limit,
                               offset=offset)

    def status(self, batch_id, with_items=False):
        """The batch summary, plus ``items`` (outcomes) if asked.

        ``{batch_id, state, created_at, updated_at, options, start_notified,
        end_notified, totals: {total, pending, running, done, failed,
        cancelled}, items: [{idx, url, key, name, state, attempts, error,
        result}]}``.
        """
        with self._read() as conn:
            found = m.summaries(conn, BC.id == batch_id)
            if not found:
                raise BatchNotFound(batch_id=batch_id)
            summary = found[0]
            if with_items:
                summary['items'] = [row.outcome() for row in m.load_items(
                    conn, IC.batch_id == batch_id)]
        return summary

    def outcomes(self, batch_id, states=None, offset=0, limit=None):
        """Item outcomes of a batch, by index: those in ``states`` (all if
        None), ``limit`` of them from ``offset``. Only those rows are read,
        so a page of a huge batch costs a page."""
        where = [IC.batch_id == batch_id]
        if states is not None:
            where.append(IC.state.in_(list(states)))
        elif offset:
            # Indexes run 0 .. total-1: the page starts at idx = offset,
            # found by the primary key, where OFFSET would step over every
            # row before it (150 ms at the end of a million items).
            where.append(IC.idx >= offset)
            offset = None
        with self._read() as conn:
            rows = m.load_items(conn, *where, limit=limit, offset=offset)
            if not rows:
                m.batch_state(conn, batch_id, lock=False)  # BatchNotFound
        return [row.outcome() for row in rows]

    def list_batches(self, limit=50, state=None, offset=0):
        """Summaries of the newest batches (skipping ``offset`` of them),
        optionally in one state."""
        where = () if state is None else m.state_filter(
            m.validate_state(state))
        return self._batches(*where, newest=True, limit=limit,
                             offset=offset or None)

    def batches_to_start(self):
        """``[(batch_id, total)]`` of batches whose batch.start is unsent.

        Cheap (no item counts): the scheduler asks on every step.
        """
        query = (sa.select(BC.id, BC.total)
                 .where(BC.start_notified == sa.false(), BC.state != m.OPEN)
                 .order_by(BC.created_at, BC.id))
        with self._read() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def unfinished_batches(self):
        """Summaries of batches whose batch.end is unsent, oldest first.

        These are what a restarted conductor resumes.
        """
        return self._batches(BC.end_notified == sa.false(),
                             BC.state != m.OPEN)

    def get_item(self, batch_id, idx):
        """One item as an ``ItemRow``; BatchNotFound if it does not exist."""
        with self._read() as conn:
            rows = m.load_items(conn, IC.batch_id == batch_id, IC.idx == idx)
        if not rows:
            raise BatchNotFound(f'batch {batch_id!r} has no item {idx!r}',
                                batch_id=batch_id, idx=idx)
        return rows[0]

    def metrics_snapshot(self):
        """``{items: {state: n}, batches: {state: n}, events_unsent: n}``
        for the metrics: the counts kept on the batch rows, and unsent
        batch.item events through their index."""
        counts = [sa.func.coalesce(sa.func.sum(getattr(BC, 'n_' + state)),
                                   0) for state in m.ITEM_STATES]
        with self._read() as conn:
            row = conn.execute(sa.select(*counts)).one()
            batches = dict(conn.execute(sa.select(
                BC.state, sa.func.count()).group_by(BC.state)).all())
            unsent = conn.execute(sa.select(sa.func.count()).where(
                IC.notified == sa.false(), IC.state.in_(m.TERMINAL))
            ).scalar()
        return {'items': dict(zip(m.ITEM_STATES, (int(n) for n in row),
                                  strict=True)),
                'batches': batches, 'events_unsent': unsent}

    def ping(self):
        """None if the database answers; else why not (``/healthz``)."""
        try:
            with self._read() as conn:
                conn.execute(sa.text('SELECT 1'))
        except Exception as exc:
            return 'database unreachable: %s: %s' % (
                type(exc).__name__, str(exc).splitlines()[0][:300])
        return None

    def batch_options(self, batch_id):
        """The options a batch was submitted with ({} if none)."""
        with self._read() as conn:
            options = conn.execute(sa.select(BC.options).where(
                BC.id == batch_id)).scalar()
        return options or {}
