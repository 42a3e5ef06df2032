"""A real oslo.messaging peer, for the tests of rpcmq's oslo compatibility.

Run in a subprocess (oslo_messaging is never imported by the tests)::

    python -m rpcmq.tests.functional.oslopeer client --url URL \\
        --exchange EXCH --topic T [--server S] [--fanout] [--timeout SEC] \\
        [--version V] [--namespace NS] [--durable]

reads one JSON request a line on stdin, ``{"op": "call"|"cast", "method":
"add", "args": {"a": 2, "b": 3}, "context": {"user": "alice"}}``, and
writes one JSON line for each on stdout: ``{"ok": true, "result": 5}`` or
``{"ok": false, "type": "ValueError", "module": "builtins", "message": ...,
"mro": [...]}`` (with ``"exc_type"`` for an oslo_messaging.RemoteError).
It exits at the end of stdin.

::

    python -m rpcmq.tests.functional.oslopeer server --url URL \\
        --exchange EXCH --topic T --server S [--durable] [--record FILE]

serves ``OsloEndpoint`` (version 1.0) with the threading executor, prints
``ready`` once its queues are declared, and stops cleanly at the end of
stdin or on SIGTERM.

::

    python -m rpcmq.tests.functional.oslopeer notify --url URL \
        --exchange EXCH --topic T

sends one notification a line on stdin, ``{"event_type": ..., "payload":
..., "priority": "info", "context": {...}}`` (oslo.messaging's
``messagingv2`` driver, topic T), and answers each with ``{"ok": true}``.

::

    python -m rpcmq.tests.functional.oslopeer listen --url URL \
        --exchange EXCH --topic T [--pool P]

prints ``ready``, then one JSON line per notification received:
``{"priority", "event_type", "payload", "publisher_id", "context"}``.

``--durable`` is ``[oslo_messaging_rabbit] amqp_durable_queues = true``.
"""

import argparse
import json
import signal
import sys
import threading
import warnings

warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
warnings.filterwarnings('ignore', message="Using the 'executor' argument")

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_messaging import opts as oslo_opts  # noqa: E402

ALLOWED_REMOTE_EXMODS = ['rpcmq.exceptions']


class OsloEndpoint:
    """What the oslo server offers (the rpcmq tests' endpoint has the same
    methods)."""

    target = oslo_messaging.Target(version='1.0')

    def __init__(self, name, record_file=None):
        self.name = name
        self.record_file = record_file
        self._lock = threading.Lock()

    def echo(self, ctxt, **kw):
        return kw

    def add(self, ctxt, a, b):
        return a + b

    def fail(self, ctxt, message):
        raise ValueError(message)

    def sleep(self, ctxt, seconds):
        threading.Event().wait(seconds)  # a slow method, as a user's
        return seconds

    def whoami(self, ctxt):
        return self.name

    def context(self, ctxt):
        return dict(ctxt)

    def record(self, ctxt, value):
        if self.record_file is None:
            raise RuntimeError('this peer was started without --record')
        with self._lock, open(self.record_file, 'a') as f:
            f.write(json.dumps(value) + '\n')


class NotificationEndpoint:
    """Prints every notification as a JSON line."""

    def _got(self, priority, ctxt, publisher_id, event_type, payload,
             metadata):
        emit(json.dumps({'priority': priority, 'event_type': event_type,
                         'payload': payload, 'publisher_id': publisher_id,
                         'context': ctxt}, default=repr))

    def __getattr__(self, priority):
        if priority not in ('audit', 'debug', 'info', 'warn', 'error',
                            'critical', 'sample'):
            raise AttributeError(priority)
        return lambda *args: self._got(priority, *args)


def make_transport(args):
    """An oslo RPC transport: ``control_exchange`` = ``--exchange``."""
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    # The global CONF, as in an OpenStack service: oslo.messaging registers
    # [oslo_messaging_tracing] only there, and its RPC client and server
    # read that group from the transport's conf.
    conf = cfg.CONF
    for group, opts in oslo_opts.list_opts():
        conf.register_opts(opts, group=group)
    conf([], project='oslopeer', default_config_files=[],
         default_config_dirs=[])
    conf.set_override('control_exchange', args.exchange)
    conf.set_override('amqp_durable_queues', args.durable,
                      group='oslo_messaging_rabbit')
    # Reply and fanout queues outlive their process by this much (1800 s
    # by default): a minute is enough and leaves less behind.
    conf.set_override('rabbit_transient_queues_ttl', 60,
                      group='oslo_messaging_rabbit')
    if args.mode in ('notify', 'listen'):
        return oslo_messaging.get_notification_transport(conf, url=args.url)
    return oslo_messaging.get_rpc_transport(
        conf, url=args.url, allowed_remote_exmods=ALLOWED_REMOTE_EXMODS)


def describe(exc):
    """The JSON line of a failed request."""
    cls = type(exc)
    out = {'ok': False, 'type': cls.__name__, 'module': cls.__module__,
           'message': str(exc), 'mro': [c.__name__ for c in cls.__mro__]}
    if isinstance(exc, oslo_messaging.RemoteError):
        out['exc_type'] = exc.exc_type
    return out


def emit(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def run_client(args, transport):
    target = oslo_messaging.Target(
        topic=args.topic, server=args.server, fanout=args.fanout,
        version=args.version, namespace=args.namespace)
    client = oslo_messaging.get_rpc_client(
        transport, target, timeout=args.timeout,
        call_monitor_timeout=args.call_monitor_timeout)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            send = client.call if request.get('op', 'call') == 'call' \
                else client.cast
            result = send(request.get('context') or {}, request['method'],
                          **(request.get('args') or {}))
            out = {'ok': True, 'result': result}
        except Exception as exc:
            out = describe(exc)
        emit(json.dumps(out, default=repr))


class _Stop(Exception):
    pass


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
    raise _Stop()


def run_server(args, transport):
    target = oslo_messaging.Target(topic=args.topic, server=args.server)
    server = oslo_messaging.get_rpc_server(
        transport, target, [OsloEndpoint(args.server, args.record)],
        executor='threading')
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.start()  # declares (and binds) its queues before returning
        emit('ready')
        for _ in sys.stdin:  # until EOF (or SIGTERM raises _Stop)
            pass
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()
        server.wait()


def run_notify(args, transport):
    notifier = oslo_messaging.Notifier(transport, publisher_id='oslopeer',
                                       driver='messagingv2',
                                       topics=[args.topic])
    for line in sys.stdin:
        if line.strip():
            note = json.loads(line)
            getattr(notifier, note.get('priority', 'info'))(
                note.get('context') or {}, note['event_type'],
                note.get('payload'))
            emit(json.dumps({'ok': True}))


def run_listen(args, transport):
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=args.topic)],
        [NotificationEndpoint()], executor='threading', pool=args.pool)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        listener.start()
        emit('ready')
        for _ in sys.stdin:
            pass
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        listener.stop()
        listener.wait()


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='oslopeer', description=__doc__)
    parser.add_argument('mode', choices=['client', 'server', 'notify',
                                         'listen'])
    parser.add_argument('--url', required=True)
    parser.add_argument('--exchange', required=True)
    parser.add_argument('--topic', required=True)
    parser.add_argument('--server')
    parser.add_argument('--fanout', action='store_true')
    parser.add_argument('--timeout', type=float, default=30)
    parser.add_argument('--call-monitor-timeout', type=float)
    parser.add_argument('--version')
    parser.add_argument('--namespace')
    parser.add_argument('--durable', action='store_true')
    parser.add_argument('--record')
    parser.add_argument('--pool')
    args = parser.parse_args(argv)
    if args.mode == 'server' and not args.server:
        parser.error('server mode needs --server')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    transport = make_transport(args)
    try:
        {'client': run_client, 'server': run_server, 'notify': run_notify,
         'listen': run_listen}[args.mode](args, transport)
    finally:
        transport.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
