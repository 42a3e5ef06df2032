"""The batch pipeline as real processes, for functional tests and benches.

``Cluster`` writes config files for two ``rpcmq-server`` daemons (endpoint
``image``, ``store = oss``) and one ``rpcmq-conductor``, starts, kills and
restarts them, and gives the caller a transport, a ``ConductorAPI`` and a
notification listener (``Events``) on the same broker.

Isolation: every cluster uses its own ``control_exchange``,
``notification_exchange``, image topic, ``[conductor] topic`` and host
names. The topics matter most: rpcmq names a topic's queue after the topic
alone, whatever the exchange, so a unique ``control_exchange`` alone would
not keep another conductor on the broker from taking our calls.
"""

import hashlib
import threading
import time
import uuid

import rpcmq
from rpcmq.conductor.api import ConductorAPI
from rpcmq.notify import get_notification_listener
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf
from rpcmq.tests.functional.daemons import Daemon, write_config

__all__ = ['Cluster', 'Events', 'OSS', 'key_for', 'proc_memory', 'unique',
           'wait_until']

#: Credentials, bucket and region of the OSS-compatible server (V4 auth).
OSS = {'access_key_id': 'rpcmq-pipe-key',
       'access_key_secret': 'Pipe-S3cret-41d7',
       'bucket': 'rpcmq-pipeline', 'region': 'cn-pipetest'}
EXT = {'JPEG': 'jpg', 'PNG': 'png', 'GIF': 'gif', 'WEBP': 'webp',
       'BMP': 'bmp'}


def pipeline_oss():
    """The OSS-compatible server holding the ``OSS`` bucket (a context
    manager)."""
    from rpcmq.testing.ossserver import OSSServer
    return OSSServer(credentials={OSS['access_key_id']:
                                  OSS['access_key_secret']},
                     buckets=[OSS['bucket']], region=OSS['region'])


def wait_until(check, timeout=30, what='condition'):
    """The first true result of ``check()``, polled until ``timeout``
    seconds have passed (then the test fails, naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, 'timed out waiting for ' + what
        time.sleep(0.05)


def unique(prefix):
    return '%s_%s' % (prefix, uuid.uuid4().hex[:10])


def key_for(url, fmt='JPEG'):
    """The endpoint's default key (``{url_sha1}.{ext}``) of ``url``."""
    return '%s.%s' % (hashlib.sha1(url.encode()).hexdigest(), EXT[fmt])


def proc_memory(pid):
    """``{'VmRSS': MiB, 'VmHWM': MiB}`` of a running process."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            name, _, value = line.partition(':')
            if name in ('VmRSS', 'VmHWM'):
                out[name] = int(value.split()[0]) / 1024.0
    return out


class Events:
    """Notification endpoint that keeps every batch event it gets."""

    def __init__(self):
        self._lock = threading.Lock()
        self.log = []  # (event_type, payload, publisher_id)

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self._lock:
            self.log.append((event_type, payload, publisher_id))

    def of(self, event_type, batch_id):
        with self._lock:
            return [p for t, p, _ in self.log
                    if t == event_type and p.get('batch_id') == batch_id]

    def wait_end(self, batch_id, timeout=60, status=None):
        """The first ``batch.end`` of ``batch_id``; AssertionError (with
        ``status()`` if given) when none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = self.of('batch.end', batch_id)
            if ends:
                return ends[0]
            time.sleep(0.05)
        raise AssertionError('no batch.end for %s within %ss: %s' % (
            batch_id, timeout, status() if status else ''))

    def wait_items(self, batch_id, count, timeout=60):
        """Wait until ``count`` distinct items have a ``batch.item``."""
        deadline = time.monotonic() + timeout
        while len({p['idx'] for p in self.of('batch.item', batch_id)}) \
                < count:
            if time.monotonic() > deadline:
                raise AssertionError('fewer than %d batch.item events for '
                                     '%s' % (count, batch_id))
            time.sleep(0.02)


def _terminate_all(daemons):
    """SIGTERM every daemon of ``{name: Daemon}`` still running (killed if
    it does not exit within 20 s); ``{name: exit code or 'killed'}``."""
    codes = {}
    for name, daemon in daemons.items():
        if daemon.proc.poll() is None:
            try:
                codes[name] = daemon.terminate(timeout=20)
            except Exception:
                daemon.stop()
                codes[name] = 'killed'
    return codes


class Cluster:
    """Two (or more) image server daemons and a conductor daemon.

    :param workdir: a pathlib.Path for config files, logs, spools, SQLite
    :param oss_endpoint: URL of the OSS-compatible server (see ``OSS``)
    :param server_opts: ``{section: {opt: value}}`` merged into the image
        servers' config; ``conductor_opts`` likewise for the conductor.
    :param client_opts: ``make_conf`` overrides of the test's own client
        (``{'security.signing_keys': [...]}``).
    """

    def __init__(self, workdir, rabbit_url, oss_endpoint,
                 hosts=('img-a', 'img-b'), server_opts=None,
                 conductor_opts=None, log_level='INFO', client_opts=None):
        self.workdir = workdir
        self.rabbit_url = rabbit_url
        self.oss_endpoint = oss_endpoint
        self.hosts = tuple(hosts)
        self.server_opts = server_opts or {}
        self.conductor_opts = conductor_opts or {}
        self.log_level = log_level
        self.control_exchange = unique('rpcmq_func')
        self.notification_exchange = unique('rpcmq_func_notify')
        self.image_topic = unique('image')
        self.conductor_topic = unique('conductor')
        self.conductor_host = unique('conductor-host')
        self.servers = {}
        self.conductor = None
        self.peers = {}  # more conductors on the same database, by name
        self._starts = 0
        self.transport = rpcmq.get_transport(make_conf(
            control_exchange=self.control_exchange,
            notification_exchange=self.notification_exchange,
            **{'conductor.topic': self.conductor_topic},
            **(client_opts or {})), url=rabbit_url)
        self.api = ConductorAPI(self.transport)
        self.events = Events()
        self.listener = None
        self.submitted = set()

    # -- config ------------------------------------------------------------

    def _common(self, host):
        return {'transport_url': self.rabbit_url, 'host': host,
                'control_exchange': self.control_exchange,
                'notification_exchange': self.notification_exchange,
                'executor': 'eventlet', 'graceful_shutdown_timeout': 5,
                'log_level': self.log_level}

    @staticmethod
    def _merge(sections, extra):
        for section, values in extra.items():
            sections.setdefault(section, {}).update(values)
        return sections

    def server_config(self, host):
        return write_config(self.workdir / ('%s.conf' % host), self._merge({
            'DEFAULT': dict(self._common(host), endpoints='image',
                            topic=self.image_topic, store='oss'),
            'image': {'allow_private_networks': True,
                      'user_agent': 'rpcmq-fetch/%s' % host,
                      'spool_dir': self.workdir / ('spool-' + host),
                      'download_retries': 1, 'download_backoff': 0.05},
            'oss': {'endpoint': self.oss_endpoint, 'bucket': OSS['bucket'],
                    'access_key_id': OSS['access_key_id'],
                    'access_key_secret': OSS['access_key_secret'],
                    'auth_version': 'v4', 'region': OSS['region'],
                    'upload_retries': 1, 'retry_backoff': 0.05,
                    'checkpoint_dir': self.workdir / ('ckpt-' + host)},
        }, self.server_opts))

    def conductor_config(self, connection, executor='eventlet'):
        return write_config(self.workdir / 'conductor.conf', self._merge({
            'DEFAULT': dict(self._common(self.conductor_host),
                            executor=executor),
            'conductor': {'connection': connection,
                          'topic': self.conductor_topic,
                          'image_topic': self.image_topic},
        }, self.conductor_opts))

    # -- daemons -----------------------------------------------------------

    def _daemon(self, program, conf, name):
        self._starts += 1
        log = self.workdir / ('%s-%d.log' % (name, self._starts))
        return Daemon(program, conf, log).start()

    def start_servers(self, hosts=None):
        """Start image servers (all by default) and wait until they serve."""
        started = [self.start_server(h, wait=False)
                   for h in hosts or self.hosts]
        for daemon in started:
            daemon.wait_for_log('rpcmq-server started', timeout=30)

    def start_server(self, host, wait=True):
        daemon = self._daemon('rpcmq-server', self.server_config(host), host)
        self.servers[host] = daemon
        if wait:
            daemon.wait_for_log('rpcmq-server started', timeout=30)
        return daemon

    def kill_server(self, host):
        self.servers[host].kill()

    def ensure_servers(self):
        """Start again the servers that are not running."""
        dead = [h for h in self.hosts if self.servers.get(h) is None
                or self.servers[h].proc.poll() is not None]
        if dead:
            self.start_servers(dead)

    def start_conductor(self, connection=None, executor='eventlet'):
        """Start the conductor (the same config file as before unless
        ``connection`` is given) and wait until it serves."""
        if connection is not None:
            self.conductor_config(connection, executor)
        conf = str(self.workdir / 'conductor.conf')
        self.conductor = self._daemon('rpcmq-conductor', conf, 'conductor')
        self.conductor.wait_for_log('rpcmq-conductor started', timeout=30)
        return self.conductor

    def kill_conductor(self):
        self.conductor.kill()

    def start_peer(self, name, connection, wait=True):
        """Another conductor (host ``<conductor host>-<name>``) on the same
        topic and database as the first."""
        host = '%s-%s' % (self.conductor_host, name)
        conf = write_config(self.workdir / ('conductor-%s.conf' % name),
                            self._merge({
                                'DEFAULT': self._common(host),
                                'conductor': {
                                    'connection': connection,
                                    'topic': self.conductor_topic,
                                    'image_topic': self.image_topic},
                            }, self.conductor_opts))
        daemon = self.peers[name] = self._daemon('rpcmq-conductor', conf,
                                                 'conductor-' + name)
        daemon.host = host
        if wait:
            daemon.wait_for_log('rpcmq-conductor started', timeout=30)
        return daemon

    def stop_peers(self):
        """SIGTERM the peers still running; {name: exit code}."""
        return _terminate_all(self.peers)

    def stop_conductor(self):
        """SIGTERM the conductor; return its exit code."""
        if self.conductor is None or self.conductor.proc.poll() is not None:
            return None
        try:
            return self.conductor.terminate(timeout=20)
        except Exception:
            self.conductor.stop()
            return 'killed'

    def memory(self):
        """{name: proc_memory} of every running daemon."""
        procs = dict(self.servers, conductor=self.conductor)
        return {name: proc_memory(d.proc.pid) for name, d in procs.items()
                if d is not None and d.proc.poll() is None}

    # -- clients -------------------------------------------------------------

    def listen(self):
        """Start the notification listener (before submitting)."""
        self.listener = get_notification_listener(
            self.transport, [rpcmq.Target(topic='batch.*')], [self.events])
        self.listener.start()
        assert self.listener.ready.wait(10), 'notification listener not ready'
        return self.events

    def submit(self, items, **kwargs):
        batch_id = self.api.submit(items, **kwargs)
        self.submitted.add(batch_id)
        return batch_id

    def wait_end(self, batch_id, timeout=60):
        return self.events.wait_end(
            batch_id, timeout, status=lambda: self._status(batch_id))

    def _status(self, batch_id):
        try:
            return self.api.status(batch_id)
        except Exception as exc:
            return 'status failed: %r' % exc

    def logs(self):
        return '\n'.join('== %s\n%s' % (p.name, p.read_text(errors='replace')
                                         [-4000:])
                         for p in sorted(self.workdir.glob('*.log')))

    # -- teardown -------------------------------------------------------------

    def close(self):
        """Stop everything; return {daemon: exit code} (SIGTERM)."""
        codes = {}
        if self.listener is not None:
            self.listener.stop()
            self.listener.wait(5)
        codes['conductor'] = self.stop_conductor()
        codes.update(self.stop_peers())
        codes.update(_terminate_all(self.servers))
        self.transport.cleanup()
        self.delete_broker_entities()
        return codes

    def delete_broker_entities(self):
        """Remove the durable queues and exchanges this cluster declared."""
        queues = [self.image_topic, self.conductor_topic,
                  '%s.%s' % (self.conductor_topic, self.conductor_host)]
        queues += ['%s.%s' % (self.conductor_topic, d.host)
                   for d in self.peers.values()]
        queues += ['%s.%s' % (self.image_topic, h) for h in self.hosts]
        delete_entities(self.rabbit_url, queues, [
            self.control_exchange, self.notification_exchange,
            '%s_fanout' % self.image_topic,
            '%s_fanout' % self.conductor_topic])
