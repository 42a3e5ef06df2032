"""The conductor's schema on a real PostgreSQL: the migration scenarios of
the unit tests, and conductors started at the same moment on an empty
database (before schema versions, three of fifteen such processes died
with UniqueViolation on pg_type)."""

import os
import subprocess
import sys
import time

import pytest

from rpcmq.conductor import migrate
from rpcmq.conductor.db import BatchStore

# The scenarios, collected again here with the store_url fixture below.
from rpcmq.tests.unit.conductor.test_migrate import *  # noqa: F403

pytestmark = pytest.mark.timeout(180)

STARTER = '''
import os, sys, time
from rpcmq.conductor.db import BatchStore
store = BatchStore(sys.argv[1])
gate = sys.argv[2]
open(os.path.join(gate, 'ready.%d' % os.getpid()), 'w').close()
while not os.path.exists(os.path.join(gate, 'go')):  # start together
    time.sleep(0.001)
store.upgrade()
store.close()
'''
CONDUCTORS = 12


@pytest.fixture
def store_url(postgres_schema_url):
    return postgres_schema_url[0]


def test_conductors_started_together_on_an_empty_database_all_come_up(
        store_url, tmp_path):
    gate = str(tmp_path)
    procs = [subprocess.Popen([sys.executable, '-c', STARTER, store_url,
                               gate], stderr=subprocess.PIPE, text=True)
             for _ in range(CONDUCTORS)]
    try:
        deadline = time.monotonic() + 120
        while sum(name.startswith('ready.') for name in os.listdir(gate)) \
                < CONDUCTORS and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs)
            time.sleep(0.01)  # polling the children's ready files
        open(os.path.join(gate, 'go'), 'w').close()
        results = [(p.wait(120), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    failed = [err for code, err in results if code]
    assert not failed, '%d of %d failed; the first: %s' % (
        len(failed), CONDUCTORS, failed[0][-2000:])
    store = BatchStore(store_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
    finally:
        store.close()
