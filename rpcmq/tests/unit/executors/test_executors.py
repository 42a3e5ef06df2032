import json
import subprocess
import sys
import threading

import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.executors import get_executor


def test_unknown_executor_names_the_choices():
    with pytest.raises(ConfigError) as err:
        get_executor('gevent', 4)
    assert 'eventlet' in str(err.value) and 'threading' in str(err.value)


def test_eventlet_without_monkey_patching_is_refused_clearly():
    with pytest.raises(ConfigError) as err:
        get_executor('eventlet', 4)
    assert 'monkey_patch' in str(err.value)


def test_threading_submit_never_blocks_and_runs_extra_work_when_free():
    # The listener thread calls submit: it must never wait for a worker.
    ex = get_executor('threading', 2)
    release = threading.Event()
    started, third_ran = [], threading.Event()
    for i in range(2):
        ex.submit(lambda i=i: (started.append(i), release.wait(10)))
    ex.submit(third_ran.set)        # returns at once although both are busy
    assert not third_ran.is_set() or len(started) < 2
    release.set()
    assert third_ran.wait(5)
    assert ex.shutdown(5) is True


def test_threading_executor_logs_an_exception_escaping_a_task(caplog):
    ex = get_executor('threading', 1)

    def broken():
        raise LookupError('task blew up')

    with caplog.at_level('ERROR', logger='rpcmq.executors'):
        ex.submit(broken)
        assert ex.shutdown(5) is True
    [record] = [r for r in caplog.records if 'unhandled error' in r.message]
    assert 'broken' in record.message
    assert record.exc_info and record.exc_info[0] is LookupError


# The eventlet executor needs a monkey-patched process of its own.
GREEN_SCRIPT = r'''
import eventlet
eventlet.monkey_patch()
import eventlet.event
import json, greenlet
from rpcmq.executors import get_executor

ex = get_executor('eventlet', 4)
seen, running, peak, out = set(), [0], [0], {}

def job(i, pause):
    seen.add(id(greenlet.getcurrent()))
    running[0] += 1
    peak[0] = max(peak[0], running[0])
    eventlet.sleep(pause)
    running[0] -= 1
    if i == 7:
        raise ValueError('boom')  # logged; the worker lives on

for i in range(200):
    ex.submit(job, i, 0.001 if i % 10 else 0.01)
out['finished'] = ex.shutdown(10)
out['workers'] = len(seen)
out['peak'] = peak[0]

# shutdown gives up after its timeout while work still runs
ex2 = get_executor('eventlet', 2)
ex2.submit(eventlet.sleep, 5)
out['gave_up'] = ex2.shutdown(0.2) is False

# submit never blocks: 10 jobs on 2 workers are all accepted at once
ex3 = get_executor('eventlet', 2)
gate = eventlet.event.Event()
done = []
for i in range(10):
    ex3.submit(lambda i=i: (gate.wait(), done.append(i)))
out['accepted'] = True
gate.send(True)
out['drained'] = ex3.shutdown(10) and len(done) == 10
print(json.dumps(out))
'''


def test_eventlet_pool_is_bounded_reuses_workers_and_drains():
    proc = subprocess.run([sys.executable, '-c', GREEN_SCRIPT],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['finished'] is True
    assert out['peak'] == 4          # never more than `size` at once
    assert out['workers'] <= 4       # 200 jobs, the same few green threads
    assert out['gave_up'] is True
    assert out['accepted'] is True and out['drained'] is True
    assert 'boom' in proc.stderr     # a failing job is logged
