"""Bridges with signing on: every daemon requires signatures, the Redis
producer's round trip still works, and a forged unsigned event is dropped."""

import json

import kombu
import pytest

from rpcmq.tests.functional import test_bridges as bridges
from rpcmq.tests.functional.conftest import RABBIT_URL, require

images = bridges.images   # the fixtures of the bridge tests
rdb = bridges.rdb

KEY = 'ops:bridge-test-signing-secret-0123'


@pytest.fixture
def stack(tmp_path):
    require('rabbit')
    stack = bridges.Stack(tmp_path, security={'signing_keys': KEY,
                                      'require_signed': 'true'})
    yield stack
    stack.close()


def test_a_signed_stack_serves_the_redis_producer_and_drops_forgeries(
        stack, rdb, images):
    for name in ('server', 'conductor', 'redis'):
        stack.start(name)
    tid = stack.tid('signed')
    # Before the real task: a forged batch.end with no signature, as anyone
    # with the broker login could publish it.
    with kombu.Connection(RABBIT_URL.replace('rabbit://', 'amqp://')) as c:
        exchange = kombu.Exchange(stack.ns + '_notify', type='topic',
                                  durable=True)
        c.Producer().publish(json.dumps({
            'event_type': 'batch.end', 'priority': 'info',
            'publisher_id': 'forger', 'payload': {
                'batch_id': tid, 'state': 'done', 'items': []}}),
            exchange=exchange, routing_key='batch.end',
            declare=[exchange], content_type='application/json')
    bridges.push_task(rdb, stack, tid, [
        {'fn': 'cover', 'url': images.url('/img/r1.jpg?kb=20')}])
    got = bridges.wait_replies(rdb, stack, tid)
    assert got == ['start', 'cover', 'end']
    assert stack.path(tid + '/cover.jpg').exists()
    assert 'not signed' in stack.daemons['redis'].log()
