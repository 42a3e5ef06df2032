"""A second RabbitMQ node listening only on TLS, for the TLS tests.

The machine's broker has no TLS listener, so the tests start one of their
own from the installed RabbitMQ: its own node name, ports, database and
Erlang cookie under a temporary directory, certificates made by a test CA
with ``openssl``, client certificates required. It listens on 127.0.0.1
(named in the broker certificate) and on ::1 (not named in it).
"""

import os
import shutil
import socket
import subprocess
import time
import uuid

RABBIT_BIN = '/usr/lib/rabbitmq/bin'


def _openssl(*args, cwd):
    subprocess.run(('openssl',) + args, cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_certs(d):
    """A CA, a broker certificate for 127.0.0.1 and localhost, and a
    client certificate, all signed by it; plus a second, unrelated CA."""
    for ca in ('ca', 'other-ca'):
        _openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days',
                 '2', '-subj', '/CN=rpcmq %s' % ca, '-keyout', ca + '.key',
                 '-out', ca + '.pem', cwd=d)
    with open(os.path.join(d, 'san.ext'), 'w') as f:
        f.write('subjectAltName=DNS:localhost,IP:127.0.0.1\n')
    for name, ext in (('server', ['-extfile', 'san.ext']), ('client', [])):
        _openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj',
                 '/CN=%s' % name, '-keyout', name + '.key', '-out',
                 name + '.csr', cwd=d)
        _openssl('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem',
                 '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
                 '-out', name + '.pem', *ext, cwd=d)
    return {name: os.path.join(d, name) for name in (
        'ca.pem', 'other-ca.pem', 'client.pem', 'client.key')}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class TLSBroker:
    """Start with ``start()``; ``port``, ``certs``; ``stop()`` at the end."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        self.node = 'rpcmqtls%s@localhost' % uuid.uuid4().hex[:6]
        self.port = free_port()
        self.certs = None
        self._env = None

    def available(self):
        """Why this machine cannot run the node, or None if it can."""
        if not os.path.exists(os.path.join(RABBIT_BIN, 'rabbitmq-server')):
            return 'RabbitMQ is not installed in %s' % RABBIT_BIN
        if shutil.which('openssl') is None:
            return 'openssl is not installed'
        return None

    def start(self, timeout=90):
        self.certs = make_certs(self.dir)
        conf = os.path.join(self.dir, 'rabbitmq')
        with open(conf + '.conf', 'w') as f:
            f.write('listeners.tcp = none\n'
                    'listeners.ssl.1 = 127.0.0.1:%(port)d\n'
                    'listeners.ssl.2 = ::1:%(port)d\n'
                    'ssl_options.cacertfile = %(d)s/ca.pem\n'
                    'ssl_options.certfile = %(d)s/server.pem\n'
                    'ssl_options.keyfile = %(d)s/server.key\n'
                    'ssl_options.verify = verify_peer\n'
                    'ssl_options.fail_if_no_peer_cert = true\n'
                    'loopback_users = none\n'
                    % {'port': self.port, 'd': self.dir})
        with open(os.path.join(self.dir, 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        os.makedirs(os.path.join(self.dir, 'home'), exist_ok=True)
        self._env = dict(
            os.environ, HOME=os.path.join(self.dir, 'home'),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=conf,
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, 'mnesia'),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, 'log'),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(
                self.dir, 'enabled_plugins'),
            RABBITMQ_PID_FILE=os.path.join(self.dir, 'pid'))
        subprocess.run([os.path.join(RABBIT_BIN, 'rabbitmq-server'),
                        '-detached'], env=self._env, check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(('127.0.0.1', self.port),
                                         timeout=1).close()
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError('TLS node did not listen on %d within %ss; log:'
                           '\n%s' % (self.port, timeout, self.log()))

    def url(self, host='127.0.0.1', scheme='rabbit'):
        return '%s://guest:guest@%s:%d/' % (scheme, host, self.port)

    def log(self):
        logdir = os.path.join(self.dir, 'log')
        if not os.path.isdir(logdir):
            return ''
        return ''.join(open(os.path.join(logdir, f), errors='replace').read()
                       for f in sorted(os.listdir(logdir)))

    def stop(self):
        if self._env is None:
            return
        subprocess.run([os.path.join(RABBIT_BIN, 'rabbitmqctl'), '-n',
                        self.node, 'stop'], env=self._env,
                       capture_output=True, timeout=60)
        self._env = None
