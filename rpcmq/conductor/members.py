"""Several conductors on one database: who is alive, and taking back the
items of those that are not.

Each conductor process has a row in ``conductors`` (a unique id, its host
and pid) and beats on it every ``[conductor] heartbeat_interval`` seconds
from a thread of its own, so a busy scheduler or a broker outage does not
make it look dead. Every claimed item names its conductor (``owner``).

A row whose heartbeat is older than ``heartbeat_timeout`` belongs to a
dead conductor: any live peer deletes it (one delete wins) and then takes
back the running items whose owner has no row, back to pending with their
attempt number kept, so the dead one's late replies are ignored. A
conductor that finds its own row gone (it stalled past the timeout and was
declared dead) logs it and joins again; its items were already taken back.
A starting conductor takes over its own host's earlier incarnation at
once when that one has stopped beating, without waiting for the timeout.
Nobody ever takes the items of a conductor that is still beating.

One conductor at a time sends the batch events (``sends_events``).
"""

import logging
import os
import threading
import time
import uuid

import sqlalchemy as sa

from rpcmq.conductor import models as m

__all__ = ['Membership']

LOG = logging.getLogger(__name__)

CC = m.conductors.c
#: pg_advisory_lock key held by the conductor that sends batch events.
EVENTS_LOCK_KEY = 0x72706D76
#: Seconds a conductor that is not the events sender waits before it asks
#: for the lock again (it used to ask on every scheduler step).
EVENTS_LOCK_RETRY = 1.0


class Membership:
    """This process's row in ``conductors`` and its heartbeat thread."""

    def __init__(self, store, host, interval=2.0, timeout=10.0):
        if timeout < 2 * interval:
            raise ValueError('heartbeat_timeout (%s) must be at least twice '
                             'heartbeat_interval (%s)' % (timeout, interval))
        self.store = store
        self.host = host[:200]
        self.interval = interval
        self.timeout = timeout
        self.id = '%s:%d:%s' % (self.host[:40], os.getpid(),
                                uuid.uuid4().hex[:12])
        self._stop = threading.Event()
        self._thread = None
        self._events_conn = None
        self._events_retry_at = 0.0

    def _insert(self, conn, now):
        conn.execute(sa.insert(m.conductors).values(
            id=self.id, host=self.host, pid=os.getpid(), started_at=now,
            heartbeat_at=now))

    def join(self, now=None):
        """Register; take back what dead conductors (this host's earlier
        incarnation at once) left running. Returns the items taken back."""
        now = time.time() if now is None else now
        with self.store.transaction() as conn:
            self._insert(conn, now)
            peers = conn.execute(sa.select(CC.id, CC.heartbeat_at).where(
                CC.host == self.host, CC.id != self.id)).all()
            for peer, beat in peers:
                if beat < now - 2 * self.interval:
                    conn.execute(sa.delete(m.conductors).where(
                        CC.id == peer, CC.heartbeat_at == beat))
                else:
                    LOG.warning('another conductor with host name %s is '
                                'alive (%s); give each conductor its own '
                                '[DEFAULT] host', self.host, peer)
        return self.take_over(now)

    def beat(self, now=None):
        """Renew the heartbeat; False if a peer had declared us dead."""
        now = time.time() if now is None else now
        with self.store.transaction() as conn:
            alive = conn.execute(sa.update(m.conductors).where(
                CC.id == self.id).values(heartbeat_at=now)).rowcount
            if not alive:
                self._insert(conn, now)
        if not alive:
            LOG.error('conductor %s missed its heartbeats for over %ss and '
                      'was declared dead: its running items were taken back '
                      'by a peer (their replies here will be ignored); '
                      'joining again', self.id, self.timeout)
        return bool(alive)

    def take_over(self, now=None):
        """Delete the rows of conductors that stopped beating, then take
        back every running item without a live owner; return them."""
        now = time.time() if now is None else now
        cutoff = now - self.timeout
        with self.store.transaction() as conn:
            dead = conn.execute(sa.select(CC.id, CC.heartbeat_at).where(
                CC.heartbeat_at < cutoff, CC.id != self.id)).all()
            gone = [peer for peer, beat in dead if conn.execute(
                sa.delete(m.conductors).where(
                    CC.id == peer, CC.heartbeat_at == beat)).rowcount]
        for peer in gone:
            LOG.warning('conductor %s stopped beating over %ss ago; taking '
                        'back its running items', peer, self.timeout)
        taken = self.store.take_back_orphans(now)
        if taken:
            LOG.info('took back %d items left running by conductors that '
                     'are gone', len(taken))
        return taken

    def leave(self):
        with self.store.transaction() as conn:
            conn.execute(sa.delete(m.conductors).where(CC.id == self.id))
        self._release_events()

    # -- one sender of events ---------------------------------------------

    def sends_events(self):
        """True if this conductor is the one that sends batch events.

        Conductors each sending what the database says is unsent would
        send every event twice. On PostgreSQL the sender holds a session
        advisory lock on a connection of its own: when it dies, its session
        ends and the next conductor to ask takes over (an event it sent
        but had not marked is sent again, with the same event_id). SQLite
        has one conductor, which always sends.
        """
        if not self.store.is_postgres:
            return True
        conn = self._events_conn
        if conn is None and time.monotonic() < self._events_retry_at:
            return False  # a peer had it a moment ago
        try:
            if conn is not None:
                conn.exec_driver_sql('SELECT 1')  # still our session?
                return True
            conn = self.store.engine.connect()
            got = conn.exec_driver_sql(
                'SELECT pg_try_advisory_lock(%d)' % EVENTS_LOCK_KEY).scalar()
            conn.commit()
        except Exception as exc:
            LOG.warning('conductor %s lost its events connection: %s',
                        self.id, exc)
            self._release_events()
            return False
        if not got:
            conn.close()
            self._events_retry_at = time.monotonic() + EVENTS_LOCK_RETRY
            return False
        self._events_conn = conn
        LOG.info('conductor %s sends the batch events', self.id)
        return True

    def _release_events(self):
        conn, self._events_conn = self._events_conn, None
        if conn is not None:
            try:
                conn.invalidate()  # the session ends, and the lock with it
                conn.close()
            except Exception:
                pass

    # -- the heartbeat thread ----------------------------------------------

    def start(self, on_taken=None):
        """Beat and look for dead peers every ``interval`` seconds;
        ``on_taken()`` runs when items were taken back (wake the
        scheduler)."""
        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.beat()
                    if self.take_over() and on_taken is not None:
                        on_taken()
                except Exception:
                    LOG.exception('conductor heartbeat failed; retrying')
        self._thread = threading.Thread(target=loop, daemon=True,
                                        name='rpcmq-conductor-heartbeat')
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 30)
