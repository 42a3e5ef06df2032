"""The conductor's event bookkeeping: which batch.start, batch.item and
batch.end are still to send (read and marked by the scheduler; part of
``BatchStore``)."""

import sqlalchemy as sa

from rpcmq.conductor import models as m

__all__ = ['EventMarks']

BC, IC = m.batches.c, m.items.c


class EventMarks:
    """Mixed into BatchStore: uses its ``_begin`` and ``_batches``."""

    def _flag(self, table, where, batch_id, **values):
        """Set a notification flag once; True only the first time."""
        with self._begin() as conn:
            changed = conn.execute(sa.update(table).where(*where)
                                   .values(**values)).rowcount
            if not changed:
                m.batch_state(conn, batch_id, lock=False)
        return bool(changed)

    def mark_start_notified(self, batch_id):
        """Record that batch.start was sent; True only the first time."""
        return self._flag(m.batches, (BC.id == batch_id,
                                      BC.start_notified == sa.false()),
                          batch_id, start_notified=True)

    def mark_item_notified(self, batch_id, idx):
        """Record that batch.item was sent for a finished item; True once.

        False also for an item that has not finished.
        """
        return self._flag(m.items, (IC.batch_id == batch_id, IC.idx == idx,
                                    IC.state.in_(m.TERMINAL),
                                    IC.notified == sa.false()),
                          batch_id, notified=True)

    def mark_items_notified(self, pairs):
        """``mark_item_notified`` for many ``(batch_id, idx)`` in one
        transaction; how many were marked now."""
        by_batch = {}
        for batch_id, idx in pairs:
            by_batch.setdefault(batch_id, []).append(idx)
        if not by_batch:
            return 0
        marked = 0
        with self._begin() as conn:
            for batch_id, idxs in by_batch.items():
                marked += conn.execute(sa.update(m.items).where(
                    IC.batch_id == batch_id, IC.idx.in_(idxs),
                    IC.state.in_(m.TERMINAL), IC.notified == sa.false())
                    .values(notified=True)).rowcount
        return marked

    def mark_end_notified(self, batch_id):
        """Record that batch.end was sent; True only the first time."""
        return self._flag(m.batches, (BC.id == batch_id,
                                      BC.end_notified == sa.false()),
                          batch_id, end_notified=True)

    def unnotified_items(self, batch_id=None, limit=100):
        """Finished items whose batch.item is unsent, oldest batch first."""
        query = (sa.select(m.items).join(m.batches, BC.id == IC.batch_id)
                 .where(IC.notified == sa.false(), IC.state.in_(m.TERMINAL))
                 .order_by(BC.created_at, IC.batch_id, IC.idx).limit(limit))
        if batch_id is not None:
            query = query.where(IC.batch_id == batch_id)
        with self._read() as conn:
            rows = conn.execute(query).all()
            if batch_id is not None and not rows:
                m.batch_state(conn, batch_id, lock=False)
        return [m.ItemRow.from_row(row) for row in rows]

    def finished_batches_to_end(self, require_items_notified=True):
        """Batches with every item finished and batch.end unsent.

        By default a batch also waits until every batch.item is marked
        sent, so batch.end always comes last. Oldest first; each is a
        summary as status() returns.
        """
        # Two index lookups per batch; one condition with OR scanned every
        # item of every batch not ended, at every step.
        where = [BC.end_notified == sa.false(), BC.state != m.OPEN,
                 ~sa.exists().where(IC.batch_id == BC.id,
                                    IC.state.in_(m.ACTIVE))]
        if require_items_notified:
            where.append(~sa.exists().where(IC.notified == sa.false(),
                                            IC.state.in_(m.TERMINAL),
                                            IC.batch_id == BC.id))
        return self._batches(*where)
