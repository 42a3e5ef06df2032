"""``rpcmq``: submit and watch batches, call any endpoint, run the demo.

    rpcmq demo [--count 300] [--dir DIR] [--dashboard]
    rpcmq [--config-file F] batch submit FILE [--batch-id ID] [--watch]
    rpcmq [--config-file F] batch status|watch|cancel|retry ID
    rpcmq [--config-file F] batch list
    rpcmq [--config-file F] call TOPIC METHOD key=value ...
    rpcmq [--config-file F] dead list|show|replay|purge [TOPIC] ...

Errors a user can cause print one line and exit non-zero.
"""

import argparse
import json
import sys

from rich.console import Console

import rpcmq

__all__ = ['main']


def _parser():
    ap = argparse.ArgumentParser(prog='rpcmq', description=__doc__.split(
        '\n')[0].replace('``', ''))
    ap.add_argument('--version', action='version',
                    version='rpcmq %s' % rpcmq.__version__)
    ap.add_argument('--config-file', action='append', default=[],
                    help='oslo.config file(s) with transport_url etc.')
    ap.add_argument('--timeout', type=float, default=15,
                    help='seconds to wait for each reply (default 15)')
    sub = ap.add_subparsers(dest='command', required=True)

    demo = sub.add_parser('demo', help='run a batch on the embedded default '
                                       '(no broker needed)')
    demo.add_argument('--count', type=int, default=300)
    demo.add_argument('--dir', help='keep the stored images in DIR '
                                    '(default: a temporary directory, '
                                    'removed at the end)')
    demo.add_argument('--dashboard', action='store_true',
                      help='serve the web dashboard of the run too, and '
                           'keep it up after the batch until Ctrl-C')
    demo.add_argument('--dashboard-port', type=int, default=8470,
                      metavar='PORT', help='its port (default 8470; 0: any '
                                           'free port)')

    batch = sub.add_parser('batch', help='submit and follow batches')
    bsub = batch.add_subparsers(dest='action', required=True)
    submit = bsub.add_parser('submit', help='FILE: one URL per line, or a '
                                            'JSON list of {url, key?, name?}')
    submit.add_argument('file')
    submit.add_argument('--batch-id', help='resume (or name) this batch: '
                                           'what it already has is skipped')
    submit.add_argument('--watch', action='store_true',
                        help='follow its progress until it ends')
    for name, what in (('status', 'totals and state of a batch'),
                       ('watch', 'follow a batch until it ends'),
                       ('cancel', 'cancel the pending items of a batch'),
                       ('retry', 'run the failed items of a batch again')):
        p = bsub.add_parser(name, help=what)
        p.add_argument('batch_id')
        if name != 'watch':
            _json_flag(p)
        if name == 'status':
            p.add_argument('--items', action='store_true',
                           help='include per-item outcomes, a page at a '
                                'time (--offset, --limit)')
            _paging(p, 1000)
    lst = bsub.add_parser('list', help='the newest batches, a page at a time')
    lst.add_argument('--state', help='only batches in this state')
    _paging(lst, 50)
    _json_flag(lst)

    from rpcmq.cmd import dead
    dead.add_parser(sub)

    keygen = sub.add_parser('keygen', help='print a new signing key entry '
                                           'for [security] signing_keys')
    keygen.add_argument('key_id', nargs='?', default='key1')

    call = sub.add_parser('call', help='call an endpoint method')
    call.add_argument('topic')
    call.add_argument('method')
    call.add_argument('args', nargs='*', metavar='key=value',
                      help='arguments; values are JSON when they parse')
    call.add_argument('--server')
    call.add_argument('--namespace')
    call.add_argument('--version')
    return ap


def _json_flag(parser):
    parser.add_argument('--json', action='store_true',
                        help="print the conductor's reply as JSON (epoch "
                             "timestamps), for scripts")


def _paging(parser, limit):
    parser.add_argument('--offset', type=int, default=0,
                        help='skip this many first (default 0)')
    parser.add_argument('--limit', type=int, default=limit,
                        help='at most this many (default %d)' % limit)


def _more(console, shown, offset, total, what):
    """Say on stderr where the next page starts, if there is one
    (``total`` None: there is one)."""
    if total is None or offset + shown < total:
        of = '' if total is None else ' of %d' % total
        console.print('%s %d-%d%s; next page: --offset %d' % (
            what, offset, offset + shown - 1, of, offset + shown),
            markup=False, highlight=False)


def parse_kv(pairs):
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise ValueError('argument %r is not key=value' % pair)
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def read_items(path):
    """Items from a file: a JSON list, or one URL per line (# comments)."""
    return load_batch(path)[0]


def load_batch(path):
    """``(items, where)``: the items of a file and, for each, where it is
    (``line 12`` or ``item 3``) for error messages."""
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = raw.count(b'\n', 0, exc.start) + 1
        raise ValueError('%s, line %d: byte 0x%02x is not UTF-8; save the '
                         'file as UTF-8 (URLs with other characters '
                         'percent-encoded)' % (path, line, raw[exc.start])) \
            from None
    if text.lstrip().startswith(('[', '{')):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError('%s is not valid JSON: %s' % (path, exc))
        data = data.get('items', data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError('%s: expected a JSON list of items' % path)
        return ([{'url': i} if isinstance(i, str) else i for i in data],
                ['item %d' % n for n in range(len(data))])
    items, where = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith('#'):
            items.append({'url': line.strip()})
            where.append('line %d' % number)
    if not items:
        raise ValueError('%s contains no URLs' % path)
    return items, where


def problems(items, where):
    """What is wrong with each item, checked here before anything is sent:
    ``[(where, what)]`` (bad URLs, repeated URLs or keys)."""
    from rpcmq.conductor.validation import url_problem
    found, urls, keys = [], {}, {}
    for item, place in zip(items, where, strict=True):
        if not isinstance(item, dict):
            found.append((place, 'is not a URL or {"url", "key"?, '
                                 '"name"?}'))
            continue
        url = item.get('url')
        problem = url_problem(url)
        if problem is not None:
            found.append((place, '%r: %s' % (url, problem)))
            continue
        first = urls.setdefault(url.strip(), place)
        if first != place:
            found.append((place, '%s repeats %s' % (url.strip(), first)))
        key = item.get('key')
        if key is not None and keys.setdefault(key, place) != place:
            found.append((place, 'key %r repeats %s' % (key, keys[key])))
    return found


def _transport(args):
    from oslo_config import cfg

    from rpcmq import conf as rpcmq_conf
    from rpcmq.transport import get_transport
    conf = cfg.ConfigOpts()
    rpcmq_conf.register_opts(conf)
    argv = []
    for path in args.config_file:
        argv += ['--config-file', path]
    rpcmq_conf.load(conf, argv,
                    default_config_files=[] if argv else None)
    if conf.transport_url.startswith('memory:'):
        # Nothing in another process can answer on the embedded broker.
        from rpcmq.exceptions import ConfigError
        used = ', '.join(conf.config_file) or 'the defaults (no config ' \
            'file in ~/.rpcmq, ~/, /etc/rpcmq or /etc)'
        raise ConfigError(reason='no broker: transport_url is %s in %s, '
                                 'which only this process can reach; give '
                                 '--config-file with [DEFAULT] transport_url '
                                 '= rabbit://...' % (conf.transport_url,
                                                     used))
    return get_transport(conf)


def _batch(args, console, out):
    from rpcmq.conductor.api import ConductorAPI
    from rpcmq.exceptions import MessagingTimeout
    items = _checked_file(args, console) if args.action == 'submit' \
        else None
    transport = _transport(args)
    try:
        api = ConductorAPI(transport, timeout=args.timeout)
        return _batch_action(args, api, transport, console, out, items)
    except MessagingTimeout as exc:
        if exc.kwargs.get('method') is None or 'lost' in str(exc):
            raise
        raise MessagingTimeout(
            'no rpcmq-conductor answered %s on topic %s within %ss; is it '
            'running (and on this broker)?' % (
                exc.kwargs['method'], transport.conf.conductor.topic,
                args.timeout), **exc.kwargs) from None
    finally:
        transport.cleanup()


def _batch_action(args, api, transport, console, out, items):
    from rpcmq.cmd.progress import BatchWatcher, print_report
    if args.action == 'submit':
        batch_id = _submit(args, api, console, items)
        out.print(batch_id)
        if not args.watch:
            return 0
        args.batch_id = batch_id
    if args.action in ('submit', 'watch'):
        try:
            end = BatchWatcher(transport, api, args.batch_id,
                               console=console).watch()
        except KeyboardInterrupt:
            console.print('rpcmq: stopped watching; batch {0} continues on '
                          'the conductor: rpcmq batch watch {0} to follow it, '
                          'rpcmq batch cancel {0} to stop it'.format(
                              args.batch_id), markup=False, highlight=False)
            return 130
        failed = print_report(end, console)
        return 1 if failed else 0
    if args.action == 'status':
        result = api.status(args.batch_id, items=args.items,
                            offset=args.offset, limit=args.limit)
        if args.items:
            _more(console, len(result['items']), args.offset,
                  result['totals']['total'], 'items')
    elif args.action == 'list':
        result = api.list(limit=args.limit + 1, state=args.state,
                          offset=args.offset)
        if len(result) > args.limit:
            result = result[:args.limit]
            _more(console, len(result), args.offset, None, 'batches')
    elif args.action == 'cancel':
        result = api.cancel(args.batch_id)
    else:
        result = api.retry(args.batch_id)
    if args.json:
        out.print_json(data=result)
    else:
        from rpcmq.cmd import tables
        tables.print_result(out, args.action, result,
                            getattr(args, 'batch_id', None))
    return 0


def _checked_file(args, console):
    """The items of ``args.file``, checked here before anything else."""
    items, where = load_batch(args.file)
    found = problems(items, where)
    if found:
        for place, what in found[:20]:
            console.print('%s %s: %s' % (args.file, place, what),
                          markup=False, highlight=False)
        if len(found) > 20:
            console.print('... and %d more' % (len(found) - 20))
        raise ValueError('%d problems in %s; nothing was submitted'
                         % (len(found), args.file))
    return items


def _submit(args, api, console, items):
    """Submit checked ``items`` in one call, or in chunks when they are
    too many for one message (resumable with --batch-id)."""
    import uuid

    from rpcmq.conductor.api import CHUNK_ITEMS
    if len(items) <= CHUNK_ITEMS:
        return api.submit(items, batch_id=args.batch_id)
    batch_id = args.batch_id or uuid.uuid4().hex
    console.print('batch %s: %d items, sent in chunks; if this is '
                  'interrupted, run the same command with --batch-id %s to '
                  'resume' % (batch_id, len(items), batch_id),
                  markup=False, highlight=False)
    step = max(len(items) // 10, 1)
    shown = [0]

    def progress(sent, total):
        if sent - shown[0] >= step or sent == total:
            shown[0] = sent
            console.print('  sent %d of %d items' % (sent, total))
    return api.submit_chunked(items, batch_id=batch_id, progress=progress)


def _call(args, out):
    from rpcmq.rpc.client import RPCClient
    from rpcmq.target import Target
    kwargs = parse_kv(args.args)
    transport = _transport(args)
    try:
        client = RPCClient(transport, Target(
            topic=args.topic, server=args.server, namespace=args.namespace,
            version=args.version), timeout=args.timeout)
        out.print_json(data=client.call({}, args.method, **kwargs))
        return 0
    finally:
        transport.cleanup()


def _dead(args, out):
    from rpcmq.cmd import dead
    transport = _transport(args)
    try:
        return dead.run(args, transport, out)
    finally:
        transport.cleanup()


def _keygen(args, out):
    """``key_id:secret`` with 32 random bytes (URL-safe base64: no ``@``,
    ``:`` or ``,``), for every process's [security] signing_keys."""
    import secrets
    if not args.key_id or any(c in args.key_id for c in ':@, '):
        raise ValueError('key id %r: use letters, digits, - or _'
                         % args.key_id)
    out.print('%s:%s' % (args.key_id, secrets.token_urlsafe(32)),
              markup=False, highlight=False)
    return 0


def parse_args(argv=None):
    """The command line; ``call``'s ``key=value`` arguments may come
    before or after its options (argparse alone takes them before only).
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == 'call':
        pairs = [a for a in extra if '=' in a and not a.startswith('-')]
        args.args += pairs
        extra = [a for a in extra if a not in pairs]
    if extra:
        parser.error('unrecognized arguments: %s' % ' '.join(extra))
    return args


def main(argv=None):
    from rpcmq.exceptions import ConfigError, RpcmqError
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    # Piped or captured, tables keep whole URLs on one line.
    out = Console() if sys.stdout.isatty() else Console(width=10000)
    try:
        if args.command == 'demo':
            from rpcmq.cmd import demo
            return demo.main(args)
        if args.command == 'batch':
            return _batch(args, console, out)
        if args.command == 'keygen':
            return _keygen(args, out)
        if args.command == 'dead':
            return _dead(args, out)
        return _call(args, out)
    except ConfigError as exc:
        sys.stderr.write('rpcmq: error: %s\n' % exc)
        return 2
    except (RpcmqError, OSError, ValueError) as exc:
        name = type(exc).__name__
        sys.stderr.write('rpcmq: error: %s%s\n' % (
            '' if isinstance(exc, (OSError, ValueError)) and
            not isinstance(exc, RpcmqError) else name + ': ', exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
