"""Durable batch state of the conductor, on SQLite or PostgreSQL.

``BatchStore`` is the only writer of the ``batches`` and ``items`` tables.
Every method is one short transaction and never holds a connection across
I/O, so one store serves many threads or green threads.

Every item transition names the attempt it belongs to and applies only while
the item is still in the state that attempt left it in (``UPDATE ... WHERE
state = 'running' AND attempts = :attempt``); it returns whether it changed
anything. A redelivered reply, a retried step or a late reply of an attempt
whose lease expired therefore never counts twice. ``attempts`` grows by one
on every claim and never goes down (``retry_failed`` starts a new retry
budget through ``retry_base`` instead), so it is the fencing token of an
attempt.

Lock order: a transaction that changes items first locks their batch row,
then the items. ``cancel`` takes the same order, so an item never goes back
to pending in a batch that was just cancelled. Claims and completions of
the scheduler are in ``steps``.

On SQLite the file runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives ``kill -9`` of the process; after a power loss the last
transitions may be lost and those items run again, under the same key.
"""

import contextlib
import uuid

import sqlalchemy as sa

from rpcmq.conductor import migrate
from rpcmq.conductor import models as m
from rpcmq.conductor.chunks import ChunkedSubmit
from rpcmq.conductor.engine import READ, make_read_engine
from rpcmq.conductor.events import EventMarks
from rpcmq.conductor.reads import BatchReads
from rpcmq.conductor.steps import Steps

__all__ = ['BatchStore']

#: Items inserted per statement by submit().
INSERT_CHUNK = 1000
#: Errors stored on items whose attempt left no outcome.
E_LEASE_EXPIRED = {'type': 'LeaseExpired',
                   'message': 'attempt %d reported no outcome before its '
                              'lease ran out'}

BC, IC = m.batches.c, m.items.c  # columns

_now = m.now_or


class BatchStore(Steps, BatchReads, EventMarks, ChunkedSubmit):
    """Batches and their items, with idempotent, conditional transitions.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/conductor.sqlite`` (the
    directory is created), ``sqlite://`` (in memory, for tests; one
    connection shared under a lock) or ``postgresql://user@host/db``.
    Call ``upgrade()`` once before use; it is a no-op on a current schema.
    """

    def __init__(self, url, echo=False):
        self.url = sa.make_url(url)
        self.is_postgres = self.url.get_backend_name() == 'postgresql'
        self.engine, self._lock = m.make_engine(self.url, echo=echo)
        self._read_engine = make_read_engine(self.engine, echo)

    def __repr__(self):
        return f'<BatchStore {self.url.render_as_string()}>'

    def upgrade(self):
        """Create or upgrade the schema (``migrate.upgrade``)."""
        return migrate.upgrade(self.engine, self._lock)

    create_all = upgrade

    def require_current(self):
        """ConfigError unless the schema is the newest (see ``migrate``)."""
        migrate.require_current(self.engine, self.url.render_as_string(),
                                self._lock)

    def close(self):
        self.engine.dispose()
        self._read_engine.dispose()

    @contextlib.contextmanager
    def _begin(self):
        with self._lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self):
        """A transaction that only reads, on connections of its own (it
        never waits in the writers' pool); on SQLite it does not wait for
        the write lock either (WAL: a consistent snapshot)."""
        with self._lock, self._read_engine.connect() as conn:
            conn.execution_options(**{READ: True})
            with conn.begin():
                yield conn

    def transaction(self):
        """One transaction on the store's database (``members`` keeps the
        ``conductors`` table with it)."""
        return self._begin()

    # -- submit and claim -------------------------------------------------

    def submit(self, items, batch_id=None, options=None, now=None):
        """Store a new batch; return ``(batch_id, created)``.

        A batch id that already exists with the same items inserts nothing
        and returns ``created=False``, so a retried submit never duplicates
        items; with other items it is refused (InvalidBatch), as are
        malformed items, ids or options.
        """
        rows = m.validate_items(items)
        batch_id = (uuid.uuid4().hex if batch_id is None
                    else m.validate_batch_id(batch_id))
        options = m.validate_options(options)
        digest = m.items_digest(rows)
        now = _now(now)
        try:
            with self._begin() as conn:
                if self._exists(conn, batch_id, digest, len(rows)):
                    return batch_id, False
                conn.execute(sa.insert(m.batches).values(
                    id=batch_id, created_at=now, updated_at=now,
                    state=m.PENDING, total=len(rows), options=options,
                    start_notified=False, end_notified=False,
                    digest=digest, n_pending=len(rows)))
                for start in range(0, len(rows), INSERT_CHUNK):
                    chunk = rows[start:start + INSERT_CHUNK]
                    conn.execute(sa.insert(m.items), [
                        dict(row, batch_id=batch_id, idx=idx, state=m.PENDING,
                             attempts=0, next_attempt_at=now, notified=False,
                             updated_at=now)
                        for idx, row in enumerate(chunk, start)])
        except sa.exc.IntegrityError:
            # A concurrent submit of the same id won the race.
            with self._begin() as conn:
                if not self._exists(conn, batch_id, digest, len(rows)):
                    raise
            return batch_id, False
        return batch_id, True

    @staticmethod
    def _exists(conn, batch_id, digest, count):
        """True if ``batch_id`` exists with these items; InvalidBatch if
        with others (batches from before digests are taken as equal)."""
        found = conn.execute(sa.select(BC.digest, BC.total).where(
            BC.id == batch_id)).first()
        if found is None:
            return False
        if found.digest is not None and found.digest != digest:
            raise m.other_items(batch_id, found.total, count)
        return True

    # -- transitions of one attempt ---------------------------------------

    def record_fetched(self, batch_id, idx, attempt, server, spool_id,
                       lease_until=None, now=None):
        """Remember which server fetched the attempt; True if still current.

        ``lease_until`` (optional) extends the lease for the store step.
        """
        values = {'server': server, 'spool_id': spool_id,
                  'updated_at': _now(now)}
        if lease_until is not None:
            values['lease_until'] = lease_until
        with self._begin() as conn:
            m.batch_state(conn, batch_id, lock=False)
            return m.move_item(conn, batch_id, idx, attempt, **values)

    def fail(self, batch_id, idx, attempt, error, retry_at=None, now=None):
        """End the running attempt with ``error``; True the first time.

        With ``retry_at`` the item goes back to pending, due at
        ``retry_at`` (cancelled instead if its batch was cancelled);
        without, it fails for good. ``error`` is an exception, a str or a
        ``{type, message}`` dict.
        """
        now = _now(now)
        values = {'error': m.error_dict(error), 'lease_until': None,
                  'updated_at': now, 'state': m.FAILED}
        with self._begin() as conn:
            batch_state = m.batch_state(conn, batch_id)
            if retry_at is not None:
                values['state'] = (m.CANCELLED if batch_state == m.CANCELLED
                                   else m.PENDING)
                values['next_attempt_at'] = retry_at
            changed = m.move_item(conn, batch_id, idx, attempt, **values)
            if changed:
                m.settle_batch(conn, batch_id, now)
        return changed

    def _requeue(self, now, lease_cutoff=None, max_attempts=None,
                 orphans_only=False):
        """Running items (with a lease before the cutoff; of no live
        conductor) back to pending."""
        extra = (() if lease_cutoff is None
                 else (IC.lease_until < lease_cutoff,))
        if orphans_only:
            extra += (sa.or_(IC.owner.is_(None), IC.owner.notin_(
                sa.select(m.conductors.c.id))),)
        with self._begin() as conn:
            stuck = conn.execute(sa.select(IC.batch_id, IC.idx, IC.attempts,
                                           IC.retry_base)
                                 .where(IC.state == m.RUNNING, *extra)).all()
        by_batch = {}
        for batch_id, idx, attempts, base in stuck:
            by_batch.setdefault(batch_id, []).append((idx, attempts, base))
        moved = []
        for batch_id, pairs in sorted(by_batch.items()):
            with self._begin() as conn:
                requeue = (m.CANCELLED if m.batch_state(conn, batch_id)
                           == m.CANCELLED else m.PENDING)
                done = []
                for idx, attempts, base in pairs:
                    values = {'state': requeue, 'lease_until': None,
                              'next_attempt_at': now, 'updated_at': now}
                    if lease_cutoff is not None:
                        values['error'] = dict(
                            E_LEASE_EXPIRED,
                            message=E_LEASE_EXPIRED['message'] % attempts)
                        if max_attempts and attempts - base >= max_attempts:
                            values['state'] = m.FAILED
                    if m.move_item(conn, batch_id, idx, attempts, *extra,
                                   **values):
                        done.append(idx)
                m.settle_batch(conn, batch_id, now)
                moved += m.load_items(conn, IC.batch_id == batch_id,
                                      IC.idx.in_(done))
        return moved

    def expire_leases(self, now=None, max_attempts=None):
        """Requeue running items whose lease has passed; return them.

        An item whose ``attempts`` reached ``max_attempts`` fails for good
        (error ``LeaseExpired``); the others go back to pending, due now.
        A late reply of the expired attempt is then ignored.
        """
        now = _now(now)
        return self._requeue(now, now, max_attempts)

    def take_back_orphans(self, now=None):
        """Requeue the running items whose conductor has no row in
        ``conductors`` any more (it was declared dead; see members.py), or
        none at all (claimed before conductors had rows). As ``recover``
        for those items only; return them."""
        return self._requeue(_now(now), orphans_only=True)

    def recover(self, now=None):
        """Requeue every running item, as if every conductor was dead.

        Items go back to pending, due now, and keep ``attempts``: the next
        claim numbers its attempt above every attempt that may still be in
        flight, so their late replies are ignored, and the interrupted
        attempt counts towards the caller's retry budget (so a conductor
        that keeps crashing cannot retry an item forever; an item is never
        failed here, though, so it always gets one more attempt). Items of
        cancelled batches become cancelled. Returns the requeued items.
        Conductors use ``take_back_orphans`` (live peers keep their items);
        this is for tools and tests that know no conductor runs.
        """
        return self._requeue(_now(now))

    # -- user actions -----------------------------------------------------

    def cancel(self, batch_id, now=None):
        """Cancel the pending items; return the batch ``totals`` after.

        Running items finish and their outcome counts; a batch that already
        ended is left as it is.
        """
        now = _now(now)
        with self._begin() as conn:
            if m.batch_state(conn, batch_id) in m.ACTIVE:
                conn.execute(sa.update(m.batches).where(BC.id == batch_id)
                             .values(state=m.CANCELLED, updated_at=now))
                cancelled = conn.execute(sa.update(m.items).where(
                    IC.batch_id == batch_id, IC.state == m.PENDING).values(
                    state=m.CANCELLED, updated_at=now)).rowcount
                m.count(conn, batch_id, m.PENDING, m.CANCELLED, cancelled)
            return m.summaries(conn, BC.id == batch_id)[0]['totals']

    def retry_failed(self, batch_id, now=None):
        """Failed items back to pending with a fresh retry budget; return
        how many.

        ``attempts`` goes on from where it was (a late reply of an attempt
        before the retry must not complete the new one); ``retry_base``
        remembers it, so the budget counts ``attempts - retry_base``. The
        batch runs again and will send a new batch.item per retried item
        and a new batch.end (batch.start is not repeated).
        """
        now = _now(now)
        with self._begin() as conn:
            m.batch_state(conn, batch_id)
            count = conn.execute(sa.update(m.items).where(
                IC.batch_id == batch_id, IC.state == m.FAILED).values(
                state=m.PENDING, retry_base=IC.attempts, next_attempt_at=now,
                lease_until=None, notified=False, updated_at=now)).rowcount
            m.count(conn, batch_id, m.FAILED, m.PENDING, count)
            if count:
                conn.execute(sa.update(m.batches).where(BC.id == batch_id)
                             .values(state=m.RUNNING, end_notified=False,
                                     updated_at=now))
        return count
