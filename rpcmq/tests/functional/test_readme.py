"""The README's commands, run as it writes them.

Each shell line of the README is either run here, verbatim (with ``<id>``
replaced by the batch id the submit printed), or listed in ``ELSEWHERE``
with what runs it; a new command in the README fails
``test_every_command_of_the_readme_is_run`` until it is one or the other.
They run in a directory holding the shipped ``etc/rpcmq/rpcmq.conf`` with
one line added, ``[image] allow_private_networks = true``: the images
come from a server on this machine, which the shipped config refuses, as
it should.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from rpcmq.testing.imageserver import ImageServer
from rpcmq.tests.functional.conftest import require
from rpcmq.tests.functional.daemons import Daemon

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.path.dirname(sys.executable)

#: Lines other tests or CI run, and why they are not run here.
ELSEWHERE = {
    'python3 -m venv .venv && .venv/bin/pip install -q . && '
    '.venv/bin/rpcmq demo': 'quick start: rpcmq demo in test_cli.py; the '
                            'fresh install is tried before each release',
    'python3 -m venv .venv && .venv/bin/pip install -q tox && .venv/bin/tox':
        'quick start: what .ci/run runs',
    'python tools/bench_compare.py --oslo-python /tmp/anchor-oslo/bin/python '
    '--rounds 3 --signed': 'a benchmark of minutes, run by hand',
    'tox -e py3': 'CI', 'tox -e functional': 'CI', 'tox -e pep8': 'CI',
    'tox -e genconfig': 'tox -e pep8 checks its output is current',
}


def readme_commands():
    """Shell lines of the README's indented blocks, comments cut."""
    found = []
    for line in (ROOT / 'README.md').read_text().splitlines():
        if re.match(r'    (rpcmq(-[a-z]+)?|curl|python3?|tox) ', line):
            found.append(re.sub(r'\s+#\s.*$', '', line.strip()))
    return found


def test_every_command_of_the_readme_is_run():
    run_here = {c for c in readme_commands() if c not in ELSEWHERE}
    assert run_here <= set(RUN_HERE), sorted(run_here - set(RUN_HERE))
    assert set(ELSEWHERE) <= set(readme_commands())


DAEMONS = [
    'rpcmq-server --config-file etc/rpcmq/rpcmq.conf',
    'rpcmq-conductor --config-file etc/rpcmq/rpcmq.conf --status-port 9465',
    'rpcmq-dashboard --config-file etc/rpcmq/rpcmq.conf',
]
# (command, exit status, text its output must hold)
RUN_HERE = {
    'rpcmq-conductor --config-file etc/rpcmq/rpcmq.conf --upgrade-db':
        (0, 'conductor database'),
    'rpcmq keygen ops': (0, 'ops:'),
    DAEMONS[0]: None, DAEMONS[1]: None, DAEMONS[2]: None,
    'rpcmq --config-file etc/rpcmq/rpcmq.conf batch submit urls.txt '
    '--watch': (0, 'done'),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf batch status <id> --items':
        (0, 'readme-2.png'),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf call image fetch --namespace '
    'image url=https://...': (1, 'BadURL'),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf dead list': (0, 'image'),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf dead show image 5': (0, ''),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf dead replay image --all':
        (0, ''),
    'rpcmq --config-file etc/rpcmq/rpcmq.conf dead purge image': (0, ''),
    'curl -s localhost:9465/healthz': (0, 'ok'),
    'curl -s localhost:8470/healthz': (0, 'ok'),
    # the batch the submit above ran, listed through signed calls
    "curl -s -H 'Authorization: Bearer example-only-replace-me-dashboard-"
    "token' localhost:8470/": (0, 'class="state done"'),
    'curl -s localhost:9464/metrics | grep ^rpcmq_':
        (0, 'rpcmq_requests_total{kind="call",method="transfer"'),
}


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / 'etc' / 'rpcmq').mkdir(parents=True)
    conf = tmp_path / 'etc' / 'rpcmq' / 'rpcmq.conf'
    shutil.copy(ROOT / 'etc' / 'rpcmq' / 'rpcmq.conf', conf)
    with open(conf, 'a') as f:
        f.write('\n[image]\nallow_private_networks = true\n')
    return tmp_path


def run(command, cwd):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'])
    return subprocess.run(command, shell=True, cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_the_readme_commands_as_written(workdir):
    require('rabbit')
    commands = readme_commands()
    with ImageServer() as images:
        (workdir / 'urls.txt').write_text(''.join(
            images.url('/img/readme-%d.png' % i) + '\n' for i in range(3)))
        started = []
        try:
            for command in DAEMONS:
                assert command in commands, command
                program, *args = shlex.split(command)
                daemon = Daemon(program, None, workdir / (program + '.log'))
                daemon.proc = subprocess.Popen(
                    [os.path.join(BIN, program), *args], cwd=workdir,
                    stdout=open(daemon.log_path, 'ab'),
                    stderr=subprocess.STDOUT)
                started.append(daemon)
            for daemon in started:
                daemon.wait_for_log('%s started' % daemon.program, 60)
            batch_id = None
            for command in commands:
                expected = RUN_HERE.get(command)
                if expected is None:
                    continue  # a daemon (above), or run elsewhere
                code, text = expected
                line = command.replace('<id>', batch_id or '<id>')
                proc = run(line, workdir)
                output = proc.stdout + proc.stderr
                assert proc.returncode == code, (line, output)
                assert text in output, (line, output)
                assert 'Traceback' not in output, (line, output)
                if 'batch submit' in command:
                    batch_id = proc.stdout.split()[0]
            assert batch_id is not None
            for daemon in started:
                assert daemon.terminate() == 0, daemon.log()
        finally:
            for daemon in started:
                daemon.stop()
