"""Several conductors on one database, told with explicit clocks: nobody
takes a live peer's items; a dead one's are taken back within the
heartbeat timeout, and its late replies no longer count.

Run on SQLite here and on PostgreSQL by
``functional/test_conductor_members_postgres.py``."""

import time

import pytest

from rpcmq.conductor.db import BatchStore
from rpcmq.conductor.members import Membership

T0 = 1000.0
INTERVAL, TIMEOUT = 1.0, 5.0


def urls(count):
    return [{'url': f'http://images.test/{i}.jpg'} for i in range(count)]


@pytest.fixture
def store_url(tmp_path):
    return f'sqlite:///{tmp_path}/state/conductor.sqlite'


@pytest.fixture
def store(store_url):
    store = BatchStore(store_url)
    store.upgrade()
    yield store
    store.close()


def conductor(store, host):
    return Membership(store, host, INTERVAL, TIMEOUT)


def claim(store, member, limit, now):
    return store.claim(limit, now=now, lease_seconds=600, owner=member.id)


def running_of(store, batch_id, member):
    return sorted(o['idx'] for o in store.outcomes(batch_id, ['running'])
                  if store.get_item(batch_id, o['idx']).owner == member.id)


def test_a_conductor_joining_mid_batch_leaves_its_peers_items_alone(store):
    """Before: recover() at start-up took every running item of the live
    peers, and they were stored a second time."""
    batch_id, _ = store.submit(urls(10), now=T0)
    a, b = conductor(store, 'a'), conductor(store, 'b')
    assert a.join(T0) == [] and b.join(T0) == []
    assert len(claim(store, a, 3, T0)) == 3
    assert len(claim(store, b, 6, T0)) == 3  # the window counts a's too

    c = conductor(store, 'c')
    assert c.join(T0 + 1) == []
    assert running_of(store, batch_id, a) == [0, 1, 2]
    assert running_of(store, batch_id, b) == [3, 4, 5]


def test_a_dead_conductors_items_are_taken_back_after_its_timeout(store):
    batch_id, _ = store.submit(urls(4), now=T0)
    a, b = conductor(store, 'a'), conductor(store, 'b')
    a.join(T0)
    b.join(T0)
    first = claim(store, a, 2, T0)
    # a dies; b keeps beating.
    for t in range(1, 5):
        assert b.beat(T0 + t)
        assert b.take_over(T0 + t) == []  # not yet: a may be slow
    taken = b.take_over(T0 + TIMEOUT + 1)
    assert sorted(i.idx for i in taken) == [0, 1]
    assert all(i.state == 'pending' for i in taken)

    again = claim(store, b, 2, T0 + TIMEOUT + 1)
    assert [i.attempts for i in again] == [2, 2]
    # a's late replies are fenced off.
    assert not store.complete(batch_id, 0, first[0].attempts, {'key': 'x'})
    assert store.complete(batch_id, 0, again[0].attempts, {'key': 'k'})


def test_a_conductor_declared_dead_joins_again_and_keeps_nothing(store):
    store.submit(urls(2), now=T0)
    a, b = conductor(store, 'a'), conductor(store, 'b')
    a.join(T0)
    b.join(T0)
    claim(store, a, 2, T0)
    b.beat(T0 + TIMEOUT + 1)
    assert len(b.take_over(T0 + TIMEOUT + 1)) == 2
    assert not a.beat(T0 + TIMEOUT + 2)   # it stalled; it learns so
    assert a.beat(T0 + TIMEOUT + 3)       # and is back in the table
    assert b.take_over(T0 + TIMEOUT + 3) == []


def test_a_restarted_conductor_takes_back_its_own_items_at_once(store):
    batch_id, _ = store.submit(urls(3), now=T0)
    old = conductor(store, 'host-1')
    old.join(T0)
    claim(store, old, 3, T0)
    # kill -9, restarted by its supervisor 3 s later (after two missed
    # beats, well before the timeout).
    new = conductor(store, 'host-1')
    taken = new.join(T0 + 3)
    assert sorted(i.idx for i in taken) == [0, 1, 2]


def test_a_live_namesake_is_warned_about_not_robbed(store, caplog):
    batch_id, _ = store.submit(urls(2), now=T0)
    first = conductor(store, 'same')
    first.join(T0)
    claim(store, first, 2, T0)
    second = conductor(store, 'same')
    assert second.join(T0 + 0.5) == []
    assert 'another conductor with host name same is alive' in caplog.text
    assert running_of(store, batch_id, first) == [0, 1]


def test_items_claimed_before_conductors_had_ids_are_taken_back(store):
    batch_id, _ = store.submit(urls(2), now=T0)
    store.claim(2, now=T0)  # no owner: an older conductor's claim
    a = conductor(store, 'a')
    assert sorted(i.idx for i in a.join(T0 + 1)) == [0, 1]


def test_leaving_removes_the_row(store):
    a = conductor(store, 'a')
    a.join(T0)
    a.leave()
    b = conductor(store, 'b')
    b.join(T0)
    assert b.take_over(T0 + 100) == []


def test_one_conductor_sends_the_events_and_a_peer_takes_over(store):
    """Only the holder of the events lock sends (SQLite: the one
    conductor). A peer asks for the lock at most once a second, not on
    every scheduler step, and takes over once the holder has left."""
    a, b = conductor(store, 'a'), conductor(store, 'b')
    a.join(T0)
    b.join(T0)
    assert a.sends_events()
    if not store.is_postgres:
        assert b.sends_events()  # SQLite: one conductor, which sends
        return
    assert not b.sends_events()
    a.leave()
    # The lock is free now; b asks again within EVENTS_LOCK_RETRY.
    deadline = time.monotonic() + 5
    while not b.sends_events():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    b.leave()
