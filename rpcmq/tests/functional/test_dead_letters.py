"""An operator's story: one cast kills every server that runs it.

Before delivery limits the cast stayed at the head of its queue for ever,
killing each restarted server, and the casts behind it ran more than once
or never. Now it runs at most ``max_deliveries`` times, is parked in
``<topic>_dead``, the casts behind it run exactly once each, and ``rpcmq
dead`` shows and replays it. Same guarantee on quorum and classic queues.
"""

import json

import pytest

from rpcmq.cmd import cli
from rpcmq.tests.functional.daemons import write_config
from rpcmq.tests.functional.poison import PoisonStory
from rpcmq.tests.scenarios.rpc import wait_for

pytestmark = pytest.mark.timeout(240)


def dead_cli(story, tmp_path, capsys, *args):
    conf = write_config(tmp_path / 'cli.conf', {
        'DEFAULT': {'transport_url': story.url},
        'rabbit': {'queue_type': story.queue_type}})
    capsys.readouterr()
    code = cli.main(['--config-file', conf, 'dead'] + list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def poison_story(url, tmp_path, capsys, queue_type):
    story = PoisonStory(url, tmp_path, **{'rabbit.queue_type': queue_type,
                                          'rabbit.max_deliveries': 3})
    story.queue_type = queue_type
    try:
        story.cast_all()
        with story.transport.dead_letters() as dead:
            barrier = []

            def settled():
                # Then one cast more: once it starts, the last good one
                # was acked, and stopping the server runs none again.
                if not barrier and set(story.good) <= set(story.runs()):
                    barrier.append(story.barrier())
                return dead.count(story.topic) == 1 and \
                    bool(barrier) and barrier[0]()
            assert story.supervise(settled), story.runs()
            runs = story.runs()
            assert runs.count('poison') == 3, runs
            for good in story.good:
                assert runs.count(good) == 1, runs

            [letter] = dead.peek(story.topic)
            assert letter.reason == 'delivery_limit'
            assert letter.queue == story.topic
            assert json.loads(letter.body)['args'] == {'n': 'poison'}
            # Peeking left it there (a quorum queue counts it again a
            # moment after the peek's channel closed).
            assert wait_for(lambda: dead.count(story.topic) == 1)

            listed = dead_cli(story, tmp_path, capsys, 'list', story.topic)
            assert story.topic in listed and ' 1 ' in listed
            shown = dead_cli(story, tmp_path, capsys, 'show', story.topic,
                             '--json')
            [shown] = json.loads(shown)
            assert shown['reason'] == 'delivery_limit'
            assert shown['deliveries'] == 3
            assert '"poison"' in shown['body']

            replayed = dead_cli(story, tmp_path, capsys, 'replay',
                                story.topic, '--all')
            assert 'replayed 1 ' in replayed
            assert wait_for(lambda: dead.count(story.topic) == 0)
            # Back on its queue as a new message: three runs again.
            before = len(story.runs())
            assert story.supervise(lambda: dead.count(story.topic) == 1)
            assert story.runs()[before:] == ['poison'] * 3
            assert 'purged 1 ' in dead_cli(story, tmp_path, capsys,
                                           'purge', story.topic)
            assert wait_for(lambda: dead.count(story.topic) == 0)
    finally:
        story.close()
    return story


@pytest.mark.parametrize('queue_type', ['quorum', 'classic'])
def test_a_poison_cast_runs_three_times_then_waits_in_the_dead_letter_queue(
        rabbit_url, tmp_path, capsys, queue_type):
    poison_story(rabbit_url, tmp_path, capsys, queue_type)


def test_nothing_to_show_for_a_topic_without_dead_letters(
        rabbit_url, tmp_path, capsys):
    story = PoisonStory(rabbit_url, tmp_path)
    story.queue_type = 'quorum'
    try:
        assert 'no dead letters' in dead_cli(story, tmp_path, capsys,
                                             'show', story.topic)
        assert 'replayed 0 ' in dead_cli(story, tmp_path, capsys, 'replay',
                                         story.topic, '--all')
    finally:
        story.close()


def park_a_raw_cast(rabbit_url, tmp_path, body, **properties):
    """A server with ``dead_letter_malformed`` takes ``body`` published
    by a plain AMQP client with ``properties``, then a good cast; the
    dead letter it parks (the good cast must have run)."""
    import kombu

    import rpcmq
    from rpcmq.endpoints.diag import DiagEndpoint
    from rpcmq.tests.functional.poison import _conf
    story = PoisonStory(rabbit_url, tmp_path)
    transport = rpcmq.get_transport(
        _conf(['rabbit.dead_letter_malformed=true']), url=rabbit_url)
    diag = DiagEndpoint(unsafe=True)
    server = rpcmq.get_rpc_server(
        transport, rpcmq.Target(topic=story.topic, server='p1'), [diag])
    try:
        server.start()
        with kombu.Connection(rabbit_url.replace('rabbit:', 'amqp:',
                                                  1)) as conn:
            conn.Producer().publish(
                body, exchange='', routing_key=story.topic,
                content_type='application/json', **properties)
        rpcmq.RPCClient(transport, rpcmq.Target(topic=story.topic)).cast(
            {}, 'bump')
        with transport.dead_letters() as dead:
            assert wait_for(lambda: dead.count(story.topic) == 1, 20)
            [letter] = dead.peek(story.topic)
        assert wait_for(lambda: diag.count({}) == 1)  # the good one ran
    finally:
        server.stop()
        server.wait(10)
        transport.cleanup()
        story.close()
    return letter


def test_a_malformed_cast_is_parked_with_its_reason_when_so_configured(
        rabbit_url, tmp_path):
    letter = park_a_raw_cast(rabbit_url, tmp_path, b'{"method": 42}',
                             headers={'app': 'legacy'})
    assert letter.reason == 'malformed'
    assert 'MalformedMessage' in letter.detail
    assert letter.body == b'{"method": 42}'
    assert letter.headers['app'] == 'legacy'


def test_a_malformed_cast_in_another_encoding_is_parked_once(rabbit_url,
                                                          tmp_path):
    # py-amqp decodes a body by its content_encoding; in UTF-7 '+2AA-' is
    # a lone surrogate: refused (MalformedMessage), but its copy for the
    # dead-letter queue was encoded as UTF-8, which failed, and the cast
    # was requeued, refused and requeued again for ever.
    body = b'{"method": "echo", "args": {"x": "+2AA-"}}'
    letter = park_a_raw_cast(rabbit_url, tmp_path, body,
                             content_encoding='utf-7')
    assert letter.reason == 'malformed' and 'surrogate' in letter.detail
    # The publisher's text in the publisher's encoding (py-amqp hands
    # over text: UTF-7 may end a run of base64 another way).
    assert letter.properties['content_encoding'] == 'utf-7'
    assert letter.body.decode('utf-7') == body.decode('utf-7')
