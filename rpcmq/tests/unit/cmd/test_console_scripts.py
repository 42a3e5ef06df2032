"""Every console script as a user first meets it: --help and --version."""

import os
import subprocess
import sys

import pytest

import rpcmq

SCRIPTS = ['rpcmq', 'rpcmq-server', 'rpcmq-conductor', 'rpcmq-bridge-redis',
           'rpcmq-bridge-mqtt']


def run(script, *args):
    exe = os.path.join(os.path.dirname(sys.executable), script)
    return subprocess.run([exe, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize('script', SCRIPTS)
def test_version(script):
    proc = run(script, '--version')
    assert proc.returncode == 0, proc.stderr
    assert rpcmq.__version__ in proc.stdout + proc.stderr
    assert rpcmq.__version__ != '0+unknown'  # the installed package's


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_says_what_it_is_without_eventlets_warning(script):
    proc = run(script, '--help')
    assert proc.returncode == 0, proc.stderr
    description = proc.stdout.split('\n\n')[1]
    assert description.strip() and '``' not in description, proc.stdout
    assert 'Eventlet is deprecated' not in proc.stderr, proc.stderr
    assert proc.stderr == '', proc.stderr


def test_batch_help_documents_every_action():
    proc = run('rpcmq', 'batch', '--help')
    assert proc.returncode == 0, proc.stderr
    for action in ('submit', 'status', 'watch', 'cancel', 'retry', 'list'):
        line = next(line for line in proc.stdout.splitlines()
                    if line.strip().startswith(action + ' ') or
                    line.strip() == action)
        assert len(line.split()) > 1, (action, proc.stdout)


def config_mistakes(tmp_path):
    not_ini = tmp_path / 'not.ini'
    not_ini.write_text('this is not an INI file\n')
    bad_value = tmp_path / 'bad.conf'
    bad_value.write_text('[DEFAULT]\nlog_level = verbose\n')
    return [
        (tmp_path / 'nope.conf', 'config file not found: %s (give an '
                                 'existing --config-file)'
         % (tmp_path / 'nope.conf')),
        (not_ini, '%s is not an INI config file: ' % not_ini),
        (bad_value, "%s: [DEFAULT] log_level: Valid values are [DEBUG, "
                    "INFO, WARNING, ERROR], but found 'verbose'" % bad_value),
    ]


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_config_mistake_is_one_line_and_exit_status_2(script, tmp_path):
    """Before: tracebacks of oslo.config's errors (the CLI, and the daemons
    for a bad value, which was only checked when read)."""
    for path, says in config_mistakes(tmp_path):
        args = ['--config-file', str(path)]
        if script == 'rpcmq':
            args += ['batch', 'list']
        proc = run(script, *args)
        assert proc.returncode == 2, (path, proc.stderr)
        assert 'Traceback' not in proc.stderr, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith('%s: error: bad configuration: %s'
                                   % (script, says)), proc.stderr
