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


def test_threading_submit_blocks_when_all_workers_are_busy():
    ex = get_executor('threading', 2)
    release = threading.Event()
    started = []
    for i in range(2):
        ex.submit(lambda i=i: (started.append(i), release.wait(10)))
    third = threading.Thread(target=ex.submit, args=(lambda: None,))
    third.start()
    third.join(0.3)
    assert third.is_alive(), 'a third task was accepted by a full pool'
    release.set()
    third.join(5)
    assert not third.is_alive()
    assert ex.shutdown(5) is True
