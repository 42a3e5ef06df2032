"""Counting a cast's deliveries, and the words for a queue of the other
type (the broker paths are in functional/test_dead_letters.py and
test_queue_types.py)."""

import amqp.exceptions
import pytest

from rpcmq.exceptions import BrokerRefused
from rpcmq.transport import errors
from rpcmq.transport.deliveries import earlier_deliveries
from rpcmq.transport.rabbit import _version
from rpcmq.transport.url import parse_url


@pytest.mark.parametrize('headers, redelivered, quorum, earlier', [
    (None, False, True, 0),
    ({'x-delivery-count': 0}, False, True, 0),
    ({'x-delivery-count': 2}, True, True, 2),  # the broker counted
    ({'x-rpcmq-deliveries': 9}, True, True, 0),  # ours mean nothing there
    (None, False, False, 0),
    (None, True, False, 1),                    # one delivery we know of
    ({'x-rpcmq-deliveries': 2}, False, False, 2),
    ({'x-rpcmq-deliveries': 2}, True, False, 3),
    ({'x-rpcmq-deliveries': 'junk'}, True, False, 1),
    ({'x-rpcmq-deliveries': -5}, False, False, 0),
])
def test_earlier_deliveries(headers, redelivered, quorum, earlier):
    assert earlier_deliveries(headers, redelivered, quorum) == earlier


def refusal(text):
    return amqp.exceptions.PreconditionFailed(text, (50, 10), 406)


@pytest.mark.parametrize('received, current, was, wanted', [
    ("the value 'quorum' of type 'longstr'", 'none', 'classic', 'quorum'),
    ('none', "the value 'quorum' of type 'longstr'", 'quorum', 'classic'),
])
def test_a_queue_of_the_other_type_is_named_with_the_way_out(
        received, current, was, wanted):
    error = errors.classify(refusal(
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
        "'image' in vhost 'prod': received %s but current is %s"
        % (received, current)), parse_url('rabbit://h:5672/prod'))
    assert isinstance(error, BrokerRefused)
    text = str(error)
    assert "queue 'image' exists as a %s queue but [rabbit] queue_type = " \
           "%s" % (was, wanted) in text
    assert 'Set queue_type = %s' % was in text
    assert 'rabbitmqctl delete_queue image -p prod' in text


def test_other_406s_keep_the_general_hint():
    error = errors.classify(refusal(
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange "
        "'rpcmq' in vhost '/'"), parse_url('rabbit://h:5672/'))
    assert 'declare it with the same arguments' in str(error)


def test_broker_versions_compare_as_numbers():
    assert _version('3.10.8') == (3, 10, 8) > (3, 9, 29)
    assert _version('4.0.0-rc.1') == (4, 0)
    assert _version(None) == (0,) < (3, 10)
