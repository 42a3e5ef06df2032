"""The rpcmq command against a real daemon on RabbitMQ, as the README
shows it."""

import json
import os
import signal
import subprocess
import sys

from rpcmq.testing.cleanup import delete_entities
from rpcmq.tests.functional.test_delivery import (
    daemons,  # noqa: F401
    start_daemon,
)


def rpcmq_cli(*args):
    exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq')
    return subprocess.run([exe, *args], capture_output=True, text=True,
                          timeout=120)


def test_call_with_arguments_after_its_options(rabbit_url, tmp_path,
                                                daemons):  # noqa: F811
    """``rpcmq call TOPIC METHOD --server S key=value``: the pair after
    the option used to be refused (unrecognized arguments)."""
    daemon = start_daemon(rabbit_url, tmp_path, 'cli-host')
    daemons.append(daemon)
    daemon.wait_for_log('rpcmq-server started', timeout=60)
    conf = tmp_path / 'cli.conf'
    conf.write_text('[DEFAULT]\ntransport_url = %s\n' % rabbit_url)
    proc = rpcmq_cli('--config-file', str(conf), 'call', daemon.topic,
                     'echo', '--server', 'cli-host', 'x={"n": 5}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {'n': 5}


def test_a_conductor_that_is_not_running_is_named(rabbit_url, tmp_path):
    conf = tmp_path / 'cli.conf'
    conf.write_text('[DEFAULT]\ntransport_url = %s\n[conductor]\n'
                    'topic = nobody_%s\n' % (rabbit_url, tmp_path.name))
    try:
        proc = rpcmq_cli('--config-file', str(conf), '--timeout', '1',
                         'batch', 'status', 'b1')
    finally:  # the call declared the topic's queue: leave no trace
        delete_entities(rabbit_url, ['nobody_%s' % tmp_path.name])
    assert proc.returncode == 1
    assert proc.stderr == (
        'rpcmq: error: MessagingTimeout: no rpcmq-conductor answered status '
        'on topic nobody_%s within 1.0s; is it running (and on this '
        'broker)?\n' % tmp_path.name)


def test_sighup_reloads_the_log_level_and_keeps_the_daemon(
        rabbit_url, tmp_path, daemons):  # noqa: F811
    """SIGHUP used to kill a daemon silently (exit 129, no log line)."""
    daemon = start_daemon(rabbit_url, tmp_path, 'hup-host',
                          log_level='INFO')
    daemons.append(daemon)
    daemon.wait_for_log('rpcmq-server started', timeout=60)
    with open(daemon.config_file) as f:
        text = f.read()
    with open(daemon.config_file, 'w') as f:
        f.write(text.replace('log_level = INFO', 'log_level = DEBUG'))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_log('SIGHUP: config files read again; log_level is '
                        'DEBUG', timeout=30)
    assert daemon.proc.poll() is None
    assert daemon.terminate(30) == 0, daemon.log()


def test_a_daemon_names_its_broker_as_a_user_would(rabbit_url, tmp_path,
                                                   daemons):  # noqa: F811
    """Its log showed kombu's internal scheme: rpcmqamqp://..."""
    daemon = start_daemon(rabbit_url, tmp_path, 'named-host',
                          log_level='INFO')
    daemons.append(daemon)
    daemon.wait_for_log('rpcmq-server started', timeout=60)
    assert 'connected to RabbitMQ' in daemon.log()
    assert 'rpcmqamqp' not in daemon.log()


def test_anyone_may_ping_diag_but_only_an_operator_lets_it_sleep(
        rabbit_url, tmp_path, daemons):  # noqa: F811
    """The diag endpoint used to let any caller hold a worker for 300 s
    (``sleep``) or raise (``fail``); now only ``ping`` and ``echo`` answer
    unless ``[diag] unsafe_methods`` is on."""
    daemon = start_daemon(rabbit_url, tmp_path, 'safe-host',
                          diag={'unsafe_methods': 'false'})
    daemons.append(daemon)
    daemon.wait_for_log('rpcmq-server started', timeout=60)
    conf = tmp_path / 'cli.conf'
    conf.write_text('[DEFAULT]\ntransport_url = %s\n' % rabbit_url)
    base = ('--config-file', str(conf), 'call', daemon.topic)
    assert rpcmq_cli(*base, 'ping').returncode == 0
    assert json.loads(rpcmq_cli(*base, 'echo', 'x=7').stdout) == 7
    for method, args in (('sleep', ['seconds=1']), ('fail', []),
                         ('bump', []), ('count', [])):
        proc = rpcmq_cli(*base, method, *args)
        assert proc.returncode == 1, (method, proc.stdout)
        assert proc.stderr == (
            'rpcmq: error: MethodDisabled: diag.%s is disabled on this '
            'server; only ping and echo answer unless [diag] '
            'unsafe_methods = true (for tests and benchmarks)\n' % method)
