"""Replies from oslo.messaging servers carry no correlation id property:
the reply consumer finds the call by the envelope's ``_msg_id``."""

import json

from rpcmq.transport.reply import _HEARTBEAT, _envelope_msg_id


def envelope(**inner):
    return json.dumps({'oslo.version': '2.0',
                       'oslo.message': json.dumps(inner)}).encode()


def test_an_oslo_reply_is_matched_by_its_msg_id():
    body = envelope(result=5, failure=None, ending=True, _msg_id='m1')
    assert _envelope_msg_id(body) == 'm1'
    assert _envelope_msg_id(body.decode()) == 'm1'


def test_a_call_monitor_heartbeat_is_not_the_reply():
    beat = envelope(result=None, failure=None, ending=False, _msg_id='m1')
    assert _envelope_msg_id(beat) is _HEARTBEAT
    failed = envelope(result=None, failure='{}', ending=True, _msg_id='m1')
    assert _envelope_msg_id(failed) == 'm1'


def test_other_bodies_have_no_msg_id():
    assert _envelope_msg_id(b'{"result": 1}') is None
    assert _envelope_msg_id(b'{"oslo.version": "2.0", "oslo.message": 7}') \
        is None
    assert _envelope_msg_id(b'{"oslo.version": "2.0"' + b'[' * 100000) \
        is None
