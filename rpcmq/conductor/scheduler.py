"""The conductor's loop: claim due items, run them, send progress events.

One thread runs the loop; items run on an executor of ``max_inflight``
workers. A step completes every item that finished since the last one in
one transaction, expires leases (every ``LEASE_CHECK`` seconds) and
claims; steps are at least ``STEP_GAP`` apart, so the database work of a
step is shared by the items that finished meanwhile. Every state change
is in the database before an event tells of it: events are sent from what
the database says is unsent, then marked sent once the broker confirmed
them:

* ``batch.start`` once per batch, ``batch.item`` once per finished item,
  ``batch.end`` once per batch after all its ``batch.item`` events, with
  every outcome. A conductor killed between sending and marking sends
  those events again on restart (at-least-once, with a stable
  ``event_id``); one the broker refuses (a subscriber's full queue that
  rejects publishes) is published again until it takes it.
* Conductors sharing a database each claim under their own id and beat
  a heartbeat (``members``); the items of one that stops beating (and, at
  start-up, of this host's earlier incarnation) go back to pending and run
  again under the same key. Live peers keep theirs.
"""

import collections
import functools
import logging
import threading
import time

from rpcmq.conductor.members import Membership
from rpcmq.conductor.worker import ItemWorker
from rpcmq.executors import get_executor
from rpcmq.notify.notifier import Notifier
from rpcmq.rpc import wire

__all__ = ['Scheduler']

LOG = logging.getLogger(__name__)

NOTIFY_BATCH = 500
#: batch.item events written together (one socket write, then a green
#: yield so that requests are not held up behind a whole round).
SEND_CHUNK = 100
#: Seconds between two scheduler steps of a conductor, at least, however
#: many share its database. (Each of N conductors used to wait N times as
#: long. But the conductor whose items finish claims the room they free in
#: the same step, so a batch's items stay with the conductors that run
#: them, and the longer gap only slowed their refill: docs/benchmarks.md.)
STEP_GAP = 0.05
#: Seconds between two rounds of sending events, at least; a step that
#: finishes a batch's last item on this conductor starts one at once, so
#: ``batch.end`` is not held back by it.
EVENTS_GAP = 0.25
#: Seconds the events thread waits for the broker to confirm a round of
#: events before it leaves them for the next round (unmarked).
CONFIRM_WAIT = 5.0
#: Seconds between two passes over the running items' leases.
LEASE_CHECK = 1.0
#: Bytes one stored item's outcome takes in a batch.end payload, at least.
MIN_OUTCOME_BYTES = 400


class Scheduler:

    def __init__(self, conf, transport, store, executor='threading'):
        self.conf = conf.conductor
        self._max_message_size = conf.max_message_size
        self.store = store
        self.worker = ItemWorker(conf, transport, store)
        self.notifier = Notifier(transport, 'conductor.%s' % conf.host)
        self.executor = get_executor(executor, self.conf.max_inflight)
        self.membership = Membership(store, conf.host,
                                     self.conf.heartbeat_interval,
                                     self.conf.heartbeat_timeout)
        self._wake = threading.Event()
        self._soon = threading.Event()        # ends a step gap early
        self._events_due = threading.Event()  # wakes the publisher
        self._hurry = threading.Event()       # ...before EVENTS_GAP ends
        self._drained = threading.Event()     # no item runs any more
        self._stop = threading.Event()
        self._publisher = None
        # (receipt or None, mark or None) of events written, in order
        self._unmarked = []
        self.confirm_wait = CONFIRM_WAIT
        self._inflight = 0
        self._leases_due = 0.0
        self._finished = []  # (batch_id, idx, attempt, result) to complete
        self._running = collections.Counter()  # batch_id -> items running
        self._completed = set()  # batches with items in the last write
        self._lock = threading.Lock()
        self._thread = None

    @property
    def max_payload(self):
        return self._max_message_size // 2

    @property
    def max_attempts(self):
        return self.conf.item_retries + 1

    def wake(self):
        """Step now: new items (submitted or sealed), a retry, or a peer's
        items taken over (rare, unlike the completions a step gap
        gathers)."""
        self._wake.set()
        self._soon.set()

    def start(self):
        if not self.store.is_postgres:
            LOG.info('conductor database %s is SQLite: run one conductor on '
                     'it at a time (PostgreSQL for several)', self.store.url)
        self.membership.join()
        LOG.info('conductor %s joined', self.membership.id)
        self.membership.start(on_taken=self.wake)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='rpcmq-scheduler')
        self._thread.start()
        self._publisher = threading.Thread(target=self._publish_loop,
                                           daemon=True,
                                           name='rpcmq-events')
        self._publisher.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._soon.set()
        self._events_due.set()

    def problem(self):
        """None while the loop runs (or was asked to stop); else why."""
        if self._thread is not None and not self._thread.is_alive() and \
                not self._stop.is_set():
            return 'conductor scheduler loop stopped'
        return None

    def wait(self, timeout=None):
        """Wait for the loop and the items in flight; True if all ended.
        Then leave the conductors table (items still running, if any, are
        taken back by the next conductor)."""
        if self._thread is not None:
            self._thread.join(timeout)
        done = self.executor.shutdown(timeout)
        try:  # what finished after the last step
            self.complete_finished()
        except Exception:
            LOG.exception('cannot record the outcomes of %d finished items; '
                          'they will run again', len(self._finished))
        self._drained.set()
        self._hurry.set()
        self._events_due.set()
        if self._publisher is not None:
            self._publisher.join(timeout)
        self.membership.stop()
        if done:
            self.membership.leave()
        return done

    # -- the loop ---------------------------------------------------------

    def _loop(self):
        while not self._stop.is_set():
            self._wake.wait(self.conf.poll_interval)
            self._wake.clear()
            try:
                self.tick()
            except Exception:
                LOG.exception('scheduler step failed; retrying')
                self._stop.wait(1.0)
            self._soon.wait(self.step_gap())
            self._soon.clear()

    def step_gap(self):
        """Seconds to wait after a step (see STEP_GAP), unless woken
        (:meth:`wake`) or the last running item of a batch finishes first:
        nothing else of that batch would share the next step's
        transaction, and its end waits on it."""
        return STEP_GAP

    def tick(self, now=None):
        """One step: complete what finished and claim in one transaction,
        expire leases, start the claimed items. Events go out from their
        own thread (``_publish_loop``): a broker that cannot take them
        never holds up claims or lease expiry."""
        now = time.time() if now is None else now
        with self._lock:
            free = self.conf.max_inflight - self._inflight
        if free > 0 and not self._stop.is_set():
            # step() counts what already runs against the window.
            items = self._finish_then(lambda finished: self.store.step(
                finished, self.conf.max_inflight,
                batch_limit=self.conf.max_inflight_per_batch, now=now,
                lease_seconds=self.conf.lease_seconds,
                owner=self.membership.id)[1])
        else:
            items = ()
            self.complete_finished(now)
        if now >= self._leases_due:
            self.store.expire_leases(now=now, max_attempts=self.max_attempts)
            self._leases_due = now + LEASE_CHECK
        with self._lock:
            for item in items:
                self._inflight += 1
                self._running[item.batch_id] += 1
            # A batch none of whose items runs here any more may have
            # ended: tell of it now rather than after the events gap.
            if any(b not in self._running for b in self._completed):
                self._hurry.set()
            self._completed = set()
        for item in items:
            self.executor.submit(self._run, item)
        self._events_due.set()

    def _run(self, item):
        result = None
        try:
            result = self.worker.run(item)
        except Exception:
            LOG.exception('item %s/%s: outcome not recorded; its lease '
                          'will expire and it runs again', item.batch_id,
                          item.idx)
        finally:
            with self._lock:
                self._inflight -= 1
                self._running[item.batch_id] -= 1
                if not self._running[item.batch_id]:
                    del self._running[item.batch_id]
                    self._soon.set()
                if result is not None:
                    self._finished.append((item.batch_id, item.idx,
                                           item.attempts, result))
            self._wake.set()

    def complete_finished(self, now=None):
        """Complete the items that finished, in one transaction. If that
        fails they wait for the next step (the database may be back)."""
        self._finish_then(lambda finished: finished and
                          self.store.complete_many(finished, now=now))

    def _finish_then(self, write):
        """``write(finished)`` with the items finished since the last step;
        if it raises they wait for the next one."""
        with self._lock:
            finished, self._finished = self._finished, []
        try:
            written = write(finished)
        except BaseException:
            with self._lock:
                self._finished[:0] = finished
            raise
        with self._lock:
            self._completed.update(f[0] for f in finished)
        return written

    # -- events -------------------------------------------------------------

    def _publish_loop(self):
        """Send what the database says is unsent, whenever something may
        have changed (or every poll_interval), until the scheduler stopped
        and its items finished; then once more, so a clean stop leaves
        nothing unsent."""
        while True:
            stopping = self._drained.is_set()
            if not stopping:  # else straight to the last round
                self._events_due.wait(self.conf.poll_interval)
            self._events_due.clear()
            try:
                self.send_events()
            except Exception:
                LOG.exception('sending batch events failed; retrying')
                self._stop.wait(1.0)
            if stopping:
                return
            self._hurry.wait(EVENTS_GAP)
            self._hurry.clear()

    def _send(self, event_type, event_id, payload):
        """Send one event; its receipt."""
        payload['event_id'] = event_id
        return self.notifier.notify_many({}, [(event_type, payload)])

    def send_events(self):
        """One round: send what the database says is unsent, and mark it
        sent once the broker confirmed it (not when it was written: a
        conductor killed before the confirm would have lost it). While the
        broker has not confirmed an earlier round, nothing new is sent: its
        publisher sends the refused events again, and they are marked when
        it took them."""
        if not self._settle():
            return
        if not self.membership.sends_events():
            return  # a peer conductor does
        for bid, total in self.store.batches_to_start():
            receipt = self._send('batch.start', '%s:start' % bid,
                                 {'batch_id': bid, 'total': total})
            self._unmarked.append((receipt, functools.partial(
                self._started, bid, total)))
        if not self._settle():
            return
        while True:
            items = self.store.unnotified_items(limit=NOTIFY_BATCH)
            written = []  # marked in one transaction once confirmed
            try:
                for start in range(0, len(items), SEND_CHUNK):
                    chunk = items[start:start + SEND_CHUNK]
                    events = []
                    for item in chunk:
                        payload = item.outcome()
                        payload['batch_id'] = item.batch_id
                        payload['event_id'] = '%s:item:%d:%d' % (
                            item.batch_id, item.idx, item.attempts)
                        events.append(('batch.item', payload))
                    receipt = self.notifier.notify_many({}, events)
                    self._unmarked.append((receipt, None))
                    written.extend((item.batch_id, item.idx)
                                   for item in chunk)
                    time.sleep(0)  # let requests in between (eventlet)
            finally:  # after the chunks' receipts, in one transaction
                if written:
                    self._unmarked.append((None, functools.partial(
                        self.store.mark_items_notified, written)))
            if not self._settle():
                return
            if len(items) < NOTIFY_BATCH:
                break
        for batch in self.store.finished_batches_to_end():
            bid = batch['batch_id']
            payload = self._end_payload(bid)
            receipt = self._send('batch.end', '%s:end' % bid, payload)
            self._unmarked.append((receipt, functools.partial(self._ended,
                                                              payload)))
        self._settle()

    def _settle(self):
        """Mark sent, in order, the events the broker confirmed. False if
        it has not confirmed them all within ``confirm_wait`` seconds: the
        rest stay unsent in the database, and are marked in a later round
        once confirmed."""
        deadline = time.monotonic() + self.confirm_wait
        while self._unmarked:
            receipt, mark = self._unmarked[0]
            if receipt is not None and \
                    not receipt.wait(max(deadline - time.monotonic(), 0)):
                LOG.warning('the broker has not confirmed %d writes of '
                            'batch events within %.1f s: they are '
                            'published again until it does, and only then '
                            'recorded as sent', len(self._unmarked),
                            self.confirm_wait)
                return False
            if mark is not None:
                mark()
            del self._unmarked[0]
        return True

    def _started(self, batch_id, total):
        self.store.mark_start_notified(batch_id)
        LOG.info('batch %s started: %d items', batch_id, total)

    def _ended(self, payload):
        bid, totals = payload['batch_id'], payload['totals']
        self.store.mark_end_notified(bid)
        LOG.info('batch %s ended %s: %d of %d done, %d failed, %d '
                 'cancelled', bid, payload['state'], totals['done'],
                 totals['total'], totals['failed'], totals['cancelled'])

    def _end_payload(self, batch_id):
        """Totals and every outcome; for a batch too large for one message,
        the outcomes of the items that did not succeed, and
        ``items_complete: false`` (page through batch.status for the rest).
        """
        status = self.store.status(batch_id)
        payload = {'batch_id': batch_id, 'state': status['state'],
                   'totals': status['totals'], 'items_complete': True}
        # Outcomes run to a few hundred bytes each: a batch that cannot fit
        # is not loaded whole just to find that out.
        if status['totals']['total'] * MIN_OUTCOME_BYTES <= self.max_payload:
            payload['items'] = self.store.outcomes(batch_id)
            if len(wire.encode(payload)) <= self.max_payload:
                return payload
        payload['items'] = self.store.outcomes(
            batch_id, states=('failed', 'cancelled'),
            limit=self.max_payload // MIN_OUTCOME_BYTES)
        payload['items_complete'] = False
        return payload
