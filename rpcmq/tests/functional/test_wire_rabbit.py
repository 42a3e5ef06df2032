"""A forged reply on a real RabbitMQ: whoever can publish to the caller's
reply queue must not be able to make it import code (see
docs/wire-format.md, "Reply")."""

import json
import os
import subprocess
import sys
import time
import uuid

import kombu
import pytest

from rpcmq.cmd.patching import ENV as OS_THREADS_ENV
from rpcmq.testing.cleanup import delete_entities
from rpcmq.transport.rabbit import RabbitDriver
from rpcmq.transport.url import parse_url

# The caller runs in its own interpreter, so that "was it monkey-patched?"
# asks about a process nothing else has touched.
CALLER = '''
import json, sys
import eventlet.patcher
import rpcmq
from rpcmq.testing.server import make_conf

url, topic = sys.argv[1:]
transport = rpcmq.get_transport(make_conf(), url=url)
client = rpcmq.RPCClient(transport, rpcmq.Target(topic=topic), timeout=30)
try:
    outcome = {"result": client.call({}, "echo", x=1)}
except rpcmq.RemoteError as exc:
    outcome = {"remote_error": exc.exc_type, "value": exc.value}
except Exception as exc:
    outcome = {"other": "%s: %s" % (type(exc).__name__, exc)}
outcome["monkey_patched"] = eventlet.patcher.is_monkey_patched("socket")
outcome["imported"] = "rpcmq.cmd.server" in sys.modules
print(json.dumps(outcome), flush=True)
transport.cleanup()
'''

FORGED = {'failure': {'module': 'rpcmq.cmd.server', 'type': 'X',
                      'message': 'forged', 'traceback': ''}}


def kombu_url(rabbit_url):
    return parse_url(rabbit_url).kombu_urls(RabbitDriver.kombu_scheme,
                                            RabbitDriver.default_vhost)


def start_caller(rabbit_url, topic):
    env = {k: v for k, v in os.environ.items() if k != OS_THREADS_ENV}
    return subprocess.Popen([sys.executable, '-c', CALLER, rabbit_url, topic],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def next_request(conn, queue, timeout=30):
    """The first message on ``queue``, taken (acked) like a server would."""
    got = []
    with conn.Consumer(queue, on_message=got.append):
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
    assert got, 'no request on %s within %ss' % (queue.name, timeout)
    got[0].ack()
    return got[0]


@pytest.fixture
def topic(rabbit_url):
    name = 'wire_%s' % uuid.uuid4().hex[:10]
    yield name
    delete_entities(rabbit_url, [name])


def test_a_forged_reply_cannot_make_the_caller_import_the_daemon(
        rabbit_url, topic):
    # We pose as the server: a plain AMQP consumer on the topic's queue,
    # declared as rpcmq declares it, before the caller sends anything.
    queue = kombu.Queue(topic, kombu.Exchange('rpcmq', type='topic',
                                              durable=True),
                        routing_key=topic, durable=True,
                        queue_arguments={'x-queue-type': 'quorum'})
    with kombu.Connection(kombu_url(rabbit_url)) as conn:
        queue(conn.default_channel).declare()
        caller = start_caller(rabbit_url, topic)
        try:
            request = next_request(conn, queue)
            assert json.loads(request.body)['method'] == 'echo'
            # The answer names rpcmq.cmd.server, whose import monkey-patches
            # the importing process with eventlet.
            conn.Producer().publish(
                json.dumps(FORGED).encode(), exchange='',
                routing_key=request.properties['reply_to'],
                correlation_id=request.properties['correlation_id'],
                serializer=None, content_type='application/json',
                content_encoding='utf-8')
            out, err = caller.communicate(timeout=60)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.communicate()
    assert caller.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {
        'remote_error': 'rpcmq.cmd.server.X', 'value': 'forged',
        'monkey_patched': False, 'imported': False}
