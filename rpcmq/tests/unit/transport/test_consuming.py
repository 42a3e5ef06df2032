"""A consumer is never alive but deaf."""

import kombu

import rpcmq
from rpcmq.testing.server import make_conf
from rpcmq.tests.scenarios.rpc import wait_for
from rpcmq.transport.consuming import Consumer


class FlakyConsumer(Consumer):
    """Fails to set up its consumers the first time, as a bug would."""

    name = 'flaky consumer'

    def __init__(self, driver):
        super().__init__(driver)
        self.attempts = 0

    def get_consumers(self, Consumer, channel):
        self.attempts += 1
        if self.attempts == 1:
            raise RuntimeError('a bug in setting up')
        return [Consumer(queues=[kombu.Queue('flaky_q')],
                         on_message=lambda m: m.ack())]


def test_a_consumer_that_hit_an_unexpected_error_consumes_again(caplog):
    transport = rpcmq.get_transport(make_conf(), url='memory://')
    consumer = FlakyConsumer(transport.driver)
    with caplog.at_level('ERROR', logger='rpcmq.transport.consuming'):
        consumer.start_thread()
        try:
            assert consumer.wait_ready(10)
        finally:
            consumer.stop()
            assert consumer.wait(10)
            transport.cleanup()
    assert consumer.attempts == 2
    [record] = [r for r in caplog.records if 'unexpected error' in r.message]
    assert 'consuming again' in record.message and record.exc_info


class LockedOut(Consumer):
    """Its queue is held by someone else: a channel error, every time."""

    name = 'locked consumer'

    def __init__(self, driver):
        super().__init__(driver)
        self.attempts = 0

    def get_consumers(self, Consumer, channel):
        import amqp.exceptions
        self.attempts += 1
        raise amqp.exceptions.ResourceLocked('queue locked by another '
                                             'connection')


def test_a_channel_error_that_repeats_does_not_spin():
    transport = rpcmq.get_transport(make_conf(), url='memory://')
    consumer = LockedOut(transport.driver)
    consumer.start_thread()
    try:
        assert wait_for(lambda: consumer.attempts >= 1)
        before = consumer.attempts
        # A measuring window, not synchronisation: how often it retries.
        assert not consumer.wait_ready(1.0)
        during = consumer.attempts - before
    finally:
        consumer.stop()
        assert consumer.wait(10)
        transport.cleanup()
    # Held RESTART_HOLD between attempts, not thousands a second.
    assert during <= 6
    assert 'locked' in str(consumer.last_error)
