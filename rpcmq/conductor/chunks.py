"""Batches too large for one message: opened, filled chunk by chunk, then
sealed (part of ``BatchStore``).

``create`` opens a batch (state ``open``: not run, no events) with the
number of items and the digest of all of them, which the client computed
while validating. ``add_items`` stores one chunk at its offset; a chunk
sent again (a resumed submit) adds nothing, and one that differs from
what is stored is refused. ``seal`` checks that every item is there, that
the stored items have the announced digest and that no key is used twice,
then the batch runs like any other. An interrupted submit resumes by
doing all three again with the same batch id.
"""


import sqlalchemy as sa

from rpcmq.conductor import models as m
from rpcmq.conductor.errors import InvalidBatch

__all__ = ['ChunkedSubmit']

BC, IC = m.batches.c, m.items.c
#: Rows read at a time when sealing recomputes the digest.
SEAL_PAGE = 10000


class ChunkedSubmit:
    """Mixed into BatchStore: uses its ``_begin``."""

    def create(self, batch_id, total, digest, options=None, now=None):
        """Open ``batch_id`` for ``total`` items; True if created, False if
        it exists with the same total and digest (resume)."""
        batch_id = m.validate_batch_id(batch_id)
        options = m.validate_options(options)
        if not isinstance(total, int) or total < 1:
            raise InvalidBatch(reason='total must be a positive integer, not '
                                      '%r' % (total,))
        if not isinstance(digest, str) or len(digest) != 64:
            raise InvalidBatch(reason='digest must be the 64 hex digits of '
                                      'items_digest()')
        now = m.now_or(now)
        try:
            with self._begin() as conn:
                found = conn.execute(sa.select(BC.total, BC.digest).where(
                    BC.id == batch_id)).first()
                if found is not None:
                    if (found.total, found.digest) != (total, digest):
                        raise m.other_items(batch_id, found.total, total)
                    return False
                conn.execute(sa.insert(m.batches).values(
                    id=batch_id, created_at=now, updated_at=now,
                    state=m.OPEN, total=total, options=options,
                    start_notified=False, end_notified=False, digest=digest))
        except sa.exc.IntegrityError:
            return self.create(batch_id, total, digest, options, now)
        return True

    def add_items(self, batch_id, offset, items, now=None):
        """Store ``items`` at indexes ``offset``...; return how many were
        new (0 for a chunk stored before)."""
        if not isinstance(offset, int) or offset < 0:
            raise InvalidBatch(reason='offset must be an integer >= 0')
        rows = m.validate_items(items, start=offset)
        now = m.now_or(now)
        last = offset + len(rows)
        with self._begin() as conn:
            found = conn.execute(sa.select(BC.state, BC.total).where(
                BC.id == batch_id).with_for_update()).first()
            if found is None:
                m.batch_state(conn, batch_id)  # BatchNotFound
            if last > found.total:
                raise InvalidBatch(reason=(
                    'items %d-%d do not fit batch %r of %d items'
                    % (offset, last - 1, batch_id, found.total)))
            stored = {row.idx: row for row in conn.execute(
                sa.select(IC.idx, IC.url, IC.key, IC.name).where(
                    IC.batch_id == batch_id, IC.idx >= offset,
                    IC.idx < last))}
            for idx, row in enumerate(rows, offset):
                have = stored.get(idx)
                if have is not None and (have.url, have.key, have.name) != (
                        row['url'], row['key'], row['name']):
                    raise InvalidBatch(reason=(
                        'item %d of batch %r is already stored with other '
                        'content; resume with the same items' % (
                            idx, batch_id)))
            new = [dict(row, batch_id=batch_id, idx=idx, state=m.PENDING,
                        attempts=0, next_attempt_at=now, notified=False,
                        updated_at=now)
                   for idx, row in enumerate(rows, offset)
                   if idx not in stored]
            if new and found.state != m.OPEN:
                raise InvalidBatch(reason='batch %r is sealed: no items can '
                                          'be added' % batch_id)
            if new:
                conn.execute(sa.insert(m.items), new)
                m.count(conn, batch_id, None, m.PENDING, len(new))
        return len(new)

    def seal(self, batch_id, now=None):
        """Let an open batch run; True if sealed now, False if it was
        already. InvalidBatch if items are missing, differ from the digest
        given to ``create``, or share a key."""
        now = m.now_or(now)
        with self._begin() as conn:
            found = conn.execute(sa.select(BC.state, BC.total, BC.digest)
                                 .where(BC.id == batch_id)
                                 .with_for_update()).first()
            if found is None:
                m.batch_state(conn, batch_id)  # BatchNotFound
            if found.state != m.OPEN:
                return False
            count = conn.execute(sa.select(sa.func.count()).where(
                IC.batch_id == batch_id)).scalar()
            if count != found.total:
                raise InvalidBatch(reason=(
                    'batch %r has %d of its %d items; add the missing ones '
                    '(submit again with the same batch id) before sealing'
                    % (batch_id, count, found.total)))
            twice = conn.execute(
                sa.select(IC.key).where(IC.batch_id == batch_id,
                                        IC.key.is_not(None))
                .group_by(IC.key).having(sa.func.count() > 1).limit(1)
            ).scalar()
            if twice is not None:
                raise InvalidBatch(reason='batch %r uses key %r for more '
                                          'than one item' % (batch_id, twice))
            if _stored_digest(conn, batch_id) != found.digest:
                raise InvalidBatch(reason=(
                    'the items stored for batch %r do not match the digest '
                    'it was created with; submit it again under a new id'
                    % batch_id))
            conn.execute(sa.update(m.batches).where(BC.id == batch_id)
                         .values(state=m.PENDING, updated_at=now))
        return True


def _stored_digest(conn, batch_id):
    """items_digest of the stored items, read a page at a time."""
    def rows():
        start = 0
        while True:
            page = conn.execute(
                sa.select(IC.url, IC.key, IC.name)
                .where(IC.batch_id == batch_id, IC.idx >= start,
                       IC.idx < start + SEAL_PAGE).order_by(IC.idx)).all()
            if not page:
                return
            for url, key, name in page:
                yield {'url': url, 'key': key, 'name': name}
            start += SEAL_PAGE
    return m.items_digest(rows())
