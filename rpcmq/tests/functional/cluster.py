"""A 3-node RabbitMQ cluster of its own, for tests of failover and quorum
queues.

Like tlsbroker.py, the nodes come from the installed RabbitMQ and share
nothing with the machine's broker (which must never be touched): each has
its own node name (``rpcmq-c1-<suffix>@localhost`` ...), AMQP port,
distribution port, database, logs and ``HOME`` under one temporary
directory. All ``HOME`` directories hold the same, fresh ``.erlang.cookie``
(read by both the server and the CLI tools), which the machine's broker does
not know: a ``rabbitmqctl`` call that named its node by mistake would be
refused. The system ``rabbitmq-env.conf`` (whose ``NODENAME`` is the
machine's broker) is replaced by an empty one of ours; distribution listens
on 127.0.0.1 only, plugins are off (an empty enabled_plugins file), memory
alarm at 1 GB. A node takes about 130-160 MB.

Each node runs in the foreground (``rabbitmq-server``, not ``-detached``)
under a small Python subreaper, a child of the test process: killed or
stopped, the beam and its helpers are reaped at once and ``kill()`` can wait
for the process to be gone. (PID 1 of the test VMs reaps orphans late, so a
detached node lingers as a zombie ``beam.smp``.)

Nodes 2 and 3 join node 1 with ``rabbitmqctl stop_app / join_cluster /
start_app``. Indexes (``ports[i]``, ``kill(i)``, ``restart(i)``) count from
0: index 0 is node ``rpcmq-c1-...``.

Tests use the session-scoped fixture that ``conftest.py`` offers (one
cluster for the whole run, started at the first test that asks for it and
stopped at the end; a test restarts the nodes it kills)::

    def test_something(rabbit_cluster):
        transport = rpcmq.get_transport(conf, url=rabbit_cluster.url())
"""

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from rpcmq.tests.functional.tlsbroker import RABBIT_BIN, free_port

__all__ = ['RabbitCluster', 'rabbit_cluster']

CTL = os.path.join(RABBIT_BIN, 'rabbitmqctl')
SERVER = os.path.join(RABBIT_BIN, 'rabbitmq-server')
NODE_PREFIX = 'rpcmq-c'

CONFIG = """\
listeners.tcp.1 = 127.0.0.1:%(port)d
loopback_users.guest = true
vm_memory_high_watermark.absolute = 1GB
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
"""


# Runs one node in the foreground (``rabbitmq-server`` without -detached) as
# a child subreaper: the beam and its helpers (erl_child_setup,
# inet_gethost) are reaped here when they end, killed or not. Once the
# node's script has ended, what is still running after a few seconds (an
# epmd the node started, say) is left alone. Should the test process die
# without stopping the node (SIGKILL), the parent-death signal makes the
# script stop the node; that signal also comes when the thread that started
# this one ends, hence the check that the parent really is gone.
REAPER = """\
import ctypes, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGUSR1, 0, 0, 0)  # PR_SET_PDEATHSIG
parent = int(sys.argv[1])
if os.getppid() != parent:
    sys.exit(1)
log = open(sys.argv[2], 'ab')
child = subprocess.Popen(sys.argv[3:], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT)
def orphaned(*args):
    if os.getppid() != parent:
        child.terminate()  # the script stops the node
signal.signal(signal.SIGUSR1, orphaned)
code, deadline = None, None
while True:
    try:
        pid, status = os.waitpid(-1, os.WNOHANG if code is not None else 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == child.pid:
        code = os.waitstatus_to_exitcode(status)
        deadline = time.monotonic() + 5
    elif pid == 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
sys.exit(code or 0)
"""


class ClusterError(RuntimeError):
    pass


def _process_alive(pid):
    """True unless ``pid`` is gone or a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rpartition(')')[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().decode(errors='replace').split('\0')
    except OSError:
        return []


class RabbitCluster:
    """``start()``; ``url()``, ``ports``, ``nodes``, ``kill(i)``,
    ``restart(i)``, ``queue_leader(name)``; ``stop()`` at the end."""

    def __init__(self, size=3, workdir=None):
        self.suffix = uuid.uuid4().hex[:6]
        self.size = size
        self.nodes = ['%s%d-%s@localhost' % (NODE_PREFIX, i + 1, self.suffix)
                      for i in range(size)]
        self.ports = []
        self.dist_ports = []
        self.pids = [None] * size
        self._procs = [None] * size
        self.killed = set()
        self.timings = {}
        self.start_seconds = None
        self._workdir = workdir
        self.dir = None
        self._envs = None

    # -- setup --

    @staticmethod
    def available():
        """Why this machine cannot run the nodes, or None if it can."""
        for path in (SERVER, CTL):
            if not os.path.exists(path):
                return 'RabbitMQ is not installed: no %s' % path
        return None

    def _node_dir(self, i):
        return os.path.join(self.dir, 'c%d' % (i + 1))

    def _prepare(self):
        self.dir = tempfile.mkdtemp(prefix='rpcmq-cluster-%s-' % self.suffix,
                                    dir=self._workdir)
        cookie = secrets.token_hex(16).upper()
        env_file = os.path.join(self.dir, 'rabbitmq-env.conf')
        with open(env_file, 'w') as f:
            f.write('# rpcmq test cluster: not /etc/rabbitmq/rabbitmq-env.conf'
                    '\n')
        plugins = os.path.join(self.dir, 'enabled_plugins')
        with open(plugins, 'w') as f:
            f.write('[].\n')
        # Distinct ports: free_port() lets the kernel choose, so keep asking
        # until none repeats.
        ports = set()
        while len(ports) < 2 * self.size:
            ports.add(free_port())
        ports = sorted(ports)
        self.ports = ports[:self.size]
        self.dist_ports = ports[self.size:]
        self._envs = []
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(('RABBITMQ_', 'ERL_'))}
        for i, node in enumerate(self.nodes):
            d = self._node_dir(i)
            home = os.path.join(d, 'home')
            os.makedirs(home)
            cookie_file = os.path.join(home, '.erlang.cookie')
            with open(cookie_file, 'w') as f:
                f.write(cookie)
            os.chmod(cookie_file, 0o400)
            conf = os.path.join(d, 'rabbitmq')
            with open(conf + '.conf', 'w') as f:
                f.write(CONFIG % {'port': self.ports[i]})
            self._envs.append(dict(
                base, HOME=home,
                RABBITMQ_CONF_ENV_FILE=env_file,
                RABBITMQ_NODENAME=node,
                RABBITMQ_DIST_PORT=str(self.dist_ports[i]),
                RABBITMQ_CONFIG_FILE=conf,
                RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(
                    d, 'advanced.config'),
                RABBITMQ_MNESIA_BASE=os.path.join(d, 'mnesia'),
                RABBITMQ_LOG_BASE=os.path.join(d, 'log'),
                RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
                RABBITMQ_PID_FILE=os.path.join(d, 'pid'),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                    '-kernel inet_dist_use_interface {127,0,0,1}'),
                ERL_EPMD_ADDRESS='127.0.0.1'))

    # -- rabbitmqctl --

    def ctl(self, i, *args, timeout=60, check=True):
        """``rabbitmqctl -n NODE args`` for node ``i``; the CompletedProcess.
        Always names one of our nodes, never the machine's broker."""
        node = self.nodes[i]
        assert node.startswith(NODE_PREFIX) and self.suffix in node
        proc = subprocess.run([CTL, '-n', node, *args], env=self._envs[i],
                              capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode:
            raise ClusterError('rabbitmqctl -n %s %s failed (%d):\n%s%s' % (
                node, ' '.join(args), proc.returncode, proc.stdout,
                proc.stderr))
        return proc

    def _live(self, exclude=()):
        for i in range(self.size):
            if i not in self.killed and i not in exclude:
                return i
        raise ClusterError('no node of the cluster is running')

    # -- start --

    def _spawn(self, i):
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            raise ClusterError('node %s is still running' % self.nodes[i])
        self._procs[i] = subprocess.Popen(
            [sys.executable, '-c', REAPER, str(os.getpid()),
             os.path.join(self._node_dir(i), 'stdout.log'), SERVER],
            env=self._envs[i], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _wait_listening(self, i, deadline):
        while time.monotonic() < deadline:
            if self._procs[i].poll() is not None:
                raise ClusterError('node %s exited (%s) while booting' % (
                    self.nodes[i], self._procs[i].returncode))
            try:
                socket.create_connection(('127.0.0.1', self.ports[i]),
                                         timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise ClusterError('node %s did not listen on %d in time' % (
            self.nodes[i], self.ports[i]))

    def _booted(self, indexes, deadline):
        """Wait until nodes ``indexes`` accept AMQP connections and (so that
        a stranger on the port cannot fool us) their CLI says so."""
        for i in indexes:
            self._wait_listening(i, deadline)
        ctls = [(i, subprocess.Popen(
            [CTL, '-n', self.nodes[i], 'await_startup', '--timeout',
             str(max(1, int(deadline - time.monotonic())))],
            env=self._envs[i], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)) for i in indexes]
        for i, p in ctls:
            try:
                out = p.communicate(timeout=max(
                    1, deadline - time.monotonic() + 10))[0]
            except subprocess.TimeoutExpired:
                p.kill()
                out = p.communicate()[0]
            if p.returncode:
                raise ClusterError('node %s did not start: %s' % (
                    self.nodes[i], out))
        for i in indexes:
            self.pids[i] = self._find_pid(i)
            self.killed.discard(i)

    def _find_pid(self, i):
        """The OS pid of node ``i``'s beam: from its pid file, checked
        against the process's ``-home`` (each node has its own)."""
        home = self._envs[i]['HOME']
        try:
            with open(self._envs[i]['RABBITMQ_PID_FILE']) as f:
                pid = int(f.read().strip())
            if home in _cmdline(pid) and _process_alive(pid):
                return pid
        except (OSError, ValueError):
            pass
        for pid in self._our_processes():
            args = _cmdline(pid)
            if home in args and any('beam' in a for a in args[:1]):
                return pid
        raise ClusterError('cannot find the OS process of %s' % self.nodes[i])

    def _our_processes(self):
        """Live processes whose command line names our directory."""
        found = []
        if not self.dir:
            return found
        for name in os.listdir('/proc'):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            if any(self.dir in a for a in _cmdline(int(name))) and \
                    _process_alive(int(name)):
                found.append(int(name))
        return found

    def start(self, timeout=240):
        t0 = time.monotonic()
        deadline = t0 + timeout
        atexit.register(self.stop)
        try:
            self._prepare()
            # Boot all three at once: most of the time is each VM loading.
            for i in range(self.size):
                self._spawn(i)
            self._booted(range(self.size), deadline)
            self.timings['boot'] = time.monotonic() - t0
            for i in range(1, self.size):
                self.ctl(i, 'stop_app')
                self.ctl(i, 'join_cluster', self.nodes[0])
                self.ctl(i, 'start_app', timeout=120)
            self.timings['join'] = (time.monotonic() - t0 -
                                    self.timings['boot'])
            self.wait_running(set(range(self.size)),
                              deadline - time.monotonic())
        except BaseException as exc:
            logs = '\n'.join(self.log(i)[-6000:] for i in range(self.size))
            self.stop()
            if isinstance(exc, Exception):
                raise ClusterError('cluster did not start: %s\nthe end of '
                                   'each log:\n%s' % (exc, logs)) from exc
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    # -- state --

    def cluster_status(self, via=None):
        """``cluster_status`` as JSON, asked of node ``via`` (default: the
        first node not killed)."""
        i = self._live() if via is None else via
        out = self.ctl(i, 'cluster_status', '--formatter', 'json').stdout
        return json.loads(out)

    def running_nodes(self, via=None):
        return set(self.cluster_status(via).get('running_nodes', ()))

    def wait_running(self, indexes, timeout=60):
        """Until exactly the nodes ``indexes`` run, in one cluster."""
        want = {self.nodes[i] for i in indexes}
        deadline = time.monotonic() + timeout
        status = None
        while True:
            try:
                status = self.cluster_status()
                if set(status.get('running_nodes', ())) == want and \
                        set(status.get('disk_nodes', ())) >= set(self.nodes):
                    return status
            except (ClusterError, ValueError) as exc:
                status = exc
            if time.monotonic() > deadline:
                raise ClusterError('cluster did not reach running nodes %s;'
                                   ' last status: %s' % (sorted(want),
                                                         status))
            time.sleep(0.5)

    def url(self, scheme='rabbit', indexes=None):
        """A transport URL naming every node (credentials on each host)."""
        indexes = range(self.size) if indexes is None else indexes
        return '%s://%s/' % (scheme, ','.join(
            'guest:guest@127.0.0.1:%d' % self.ports[i] for i in indexes))

    def node_of_port(self, port):
        """Index of the node listening on AMQP ``port``."""
        return self.ports.index(port)

    def queue_leader(self, name, vhost='/'):
        """Index of the node leading quorum queue ``name`` (None if the
        queue has no leader now)."""
        out = self.ctl(self._live(), 'list_queues', '-p', vhost, '--quiet',
                       '--formatter', 'json', 'name', 'type', 'leader',
                       'members').stdout
        for q in json.loads(out):
            if q['name'] == name:
                leader = q.get('leader')
                return (self.nodes.index(leader) if leader in self.nodes
                        else None)
        raise ClusterError('no queue %r on the cluster' % name)

    def queue_info(self, name, via, vhost='/'):
        """list_queues' row for ``name`` as node ``via`` sees it, or None."""
        out = self.ctl(via, 'list_queues', '-p', vhost, '--quiet',
                       '--formatter', 'json', 'name', 'type',
                       'leader', 'members', 'online').stdout
        for q in json.loads(out):
            if q['name'] == name:
                return q
        return None

    # -- faults --

    def kill(self, i, timeout=30):
        """SIGKILL node ``i``'s beam (no clean shutdown) and wait until it
        is gone."""
        pid = self.pids[i]
        if pid is None or not _process_alive(pid):
            raise ClusterError('node %s is not running' % self.nodes[i])
        os.kill(pid, signal.SIGKILL)
        try:
            # The node's script and our reaper end with the beam.
            self._procs[i].wait(timeout)
        except subprocess.TimeoutExpired:
            raise ClusterError('%s (pid %d) survived SIGKILL' % (
                self.nodes[i], pid)) from None
        self.killed.add(i)
        self.pids[i] = None

    def restart(self, i, timeout=120):
        """Start killed node ``i`` again; return once the cluster shows it
        running next to the others."""
        if i not in self.killed:
            raise ClusterError('node %s was not killed' % self.nodes[i])
        deadline = time.monotonic() + timeout
        self._spawn(i)
        self._booted([i], deadline)
        self.wait_running(set(range(self.size)) - self.killed,
                          deadline - time.monotonic())

    # -- teardown --

    def log(self, i=None):
        """The log files and console output of node ``i`` (all nodes if
        None)."""
        if not self.dir:
            return ''
        out = []
        for n in range(self.size) if i is None else [i]:
            d = self._node_dir(n)
            logdir = os.path.join(d, 'log')
            files = [os.path.join(d, 'stdout.log')]
            if os.path.isdir(logdir):
                files += [os.path.join(logdir, f)
                          for f in sorted(os.listdir(logdir))]
            for path in files:
                if os.path.isfile(path):
                    with open(path, errors='replace') as fh:
                        out.append('==> %s %s <==\n%s' % (
                            self.nodes[n], os.path.basename(path),
                            fh.read()))
        return '\n'.join(out)

    def stop(self):
        """Stop every node, kill what is left, remove the directory.
        Safe to call twice, or after a failed start."""
        atexit.unregister(self.stop)
        if self._envs is not None:
            self._stop_nodes()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _stop_nodes(self):
        running = [i for i in range(self.size) if self._procs[i] is not None
                   and self._procs[i].poll() is None]
        ctls = [subprocess.Popen(
            [CTL, '-n', self.nodes[i], 'stop'], env=self._envs[i],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in running]
        deadline = time.monotonic() + 60
        for p in ctls + [self._procs[i] for i in running]:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # Whatever did not stop (a node that was half-way booting, a hung
        # rabbitmqctl): kill it by its command line, which names our
        # directory (the beam's -home), then its reaper and script.
        deadline = time.monotonic() + 30
        while True:
            left = self._our_processes()
            if not left:
                break
            if time.monotonic() > deadline:
                raise ClusterError('processes of the cluster survived: %s'
                                   % left)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for p in ctls + [p for p in self._procs if p is not None]:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._procs = [None] * self.size
        self._envs = None
        self.pids = [None] * self.size


# Named explicitly: it keeps its name when imported under another. One
# for the whole test session (conftest.py offers it): starting three nodes
# takes 15-25 s, a minute on a loaded machine.
@pytest.fixture(scope='session', name='rabbit_cluster')
def rabbit_cluster():
    """A started RabbitCluster for the session; stopped at its end. Tests
    leave it with three running nodes (restart what they kill)."""
    cluster = RabbitCluster()
    why = cluster.available()
    if why:
        if os.environ.get('CI') == 'true':
            pytest.fail('CI needs a RabbitMQ cluster: %s' % why,
                        pytrace=False)
        pytest.skip(why)
    cluster.start()
    print('\nrabbit_cluster: 3 nodes started and clustered in %.1fs'
          % cluster.start_seconds)
    try:
        yield cluster
    finally:
        cluster.stop()
