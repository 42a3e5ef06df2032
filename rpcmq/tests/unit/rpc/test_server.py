"""What a server does when something goes wrong: nothing fails silently,
one message costs only itself."""

import threading

import pytest

import rpcmq
from rpcmq.exceptions import TransportError
from rpcmq.testing.server import InProcessServer
from rpcmq.tests.scenarios.rpc import wait_for


class Buggy:
    def __init__(self):
        self.calls = 0

    def add(self, ctxt, a, b):
        return a + b   # a TypeError here is the endpoint's bug

    def count(self, ctxt):
        self.calls += 1
        return self.calls


def test_a_type_error_inside_an_endpoint_is_logged_as_a_bug(caplog):
    with InProcessServer([Buggy()]) as srv:
        with caplog.at_level('ERROR', logger='rpcmq.rpc.server'):
            with pytest.raises(TypeError):
                srv.client.call({}, 'add', a=1, b='x')
    [record] = [r for r in caplog.records if 'add failed' in r.message]
    assert record.exc_info and record.exc_info[0] is TypeError


def test_arguments_that_do_not_bind_are_the_callers_error(caplog):
    with InProcessServer([Buggy()]) as srv:
        with caplog.at_level('WARNING', logger='rpcmq.rpc.server'):
            with pytest.raises(rpcmq.InvalidArguments):
                srv.client.call({}, 'add', a=1)
    assert not [r for r in caplog.records if r.exc_info]


def test_a_reply_that_cannot_be_sent_is_logged_with_method_and_id(
        caplog, monkeypatch):
    with InProcessServer([Buggy()], timeout=1) as srv:
        driver = srv.transport.driver

        def broken_reply(*args, **kwargs):
            raise TransportError(reason='broker went away')
        monkeypatch.setattr(driver, 'reply', broken_reply)
        with caplog.at_level('ERROR', logger='rpcmq.rpc.server'):
            with pytest.raises(rpcmq.MessagingTimeout):
                srv.client.call({}, 'count')
            assert wait_for(lambda: 'could not send the reply' in caplog.text)
    assert 'count' in caplog.text and 'broker went away' in caplog.text


def test_a_message_the_server_cannot_take_costs_only_itself(caplog):
    # Even a failure in handing a message to the executor drops only that
    # message: the listener goes on with the next one.
    with InProcessServer([Buggy()]) as srv:
        real_submit = srv.server.executor.submit
        failed = threading.Event()

        def submit_once_broken(fn, *args):
            if not failed.is_set():
                failed.set()
                raise RuntimeError('executor exploded')
            return real_submit(fn, *args)
        srv.server.executor.submit = submit_once_broken
        with caplog.at_level('ERROR'):
            with pytest.raises(rpcmq.MessagingTimeout):
                srv.client.prepare(timeout=0.5).call({}, 'count')
        assert srv.client.call({}, 'count') == 1
    assert 'could not take message' in caplog.text
