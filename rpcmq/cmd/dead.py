"""``rpcmq dead``: the casts parked after too many deliveries.

    rpcmq [--config-file F] dead list [TOPIC ...]
    rpcmq [--config-file F] dead show TOPIC [N]
    rpcmq [--config-file F] dead replay TOPIC (--all | N)
    rpcmq [--config-file F] dead purge TOPIC

Without topics, ``list`` looks at the topics the configuration names
([DEFAULT] topic, [conductor] topic and image_topic).
"""

from rich.markup import escape
from rich.table import Table

from rpcmq.conf import configured_topics

__all__ = ['add_parser', 'run']


def add_parser(sub):
    dead = sub.add_parser('dead', help='list, show, replay or purge casts '
                                       'parked in dead-letter queues')
    dsub = dead.add_subparsers(dest='action', required=True)
    lst = dsub.add_parser('list', help='dead letters waiting, per topic')
    lst.add_argument('topics', nargs='*', metavar='TOPIC')
    show = dsub.add_parser('show', help='the first N dead letters of TOPIC '
                                        '(left in place)')
    show.add_argument('topic')
    show.add_argument('n', nargs='?', type=int, default=10)
    show.add_argument('--json', action='store_true',
                      help='print JSON instead of a table')
    replay = dsub.add_parser('replay', help='put dead letters back on the '
                                            'queue they came from')
    replay.add_argument('topic')
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument('--all', action='store_true')
    which.add_argument('n', nargs='?', type=int)
    purge = dsub.add_parser('purge', help='drop every dead letter of TOPIC')
    purge.add_argument('topic')


def run(args, transport, out):
    with transport.dead_letters(timeout=args.timeout) as dead:
        if args.action == 'list':
            topics = args.topics or configured_topics(transport.conf)
            table = Table('topic', 'dead letters', 'queue')
            for topic in topics:
                table.add_row(escape(topic), str(dead.count(topic)),
                              escape('%s_dead' % topic))
            out.print(table)
        elif args.action == 'show':
            letters = [letter.as_dict()
                       for letter in dead.peek(args.topic, args.n)]
            if args.json:
                out.print_json(data=letters)
            elif not letters:
                out.print('no dead letters for %s' % escape(args.topic))
            else:
                out.print(_table(letters))
        elif args.action == 'replay':
            done = dead.replay(args.topic, None if args.all else args.n)
            out.print('replayed %d dead letters of %s'
                      % (done, escape(args.topic)))
        else:
            out.print('purged %d dead letters of %s'
                      % (dead.purge(args.topic), escape(args.topic)))
    return 0


def _table(letters):
    table = Table('#', 'parked at', 'reason', 'from queue', 'deliveries',
                  'correlation id', 'body', show_lines=True)
    for i, letter in enumerate(letters, 1):
        reason = letter['reason'] + (
            ': ' + letter['detail'] if letter['detail'] else '')
        body = letter['body']
        table.add_row(str(i), letter['parked_at'] or '', escape(reason),
                      escape(letter['queue']), str(letter['deliveries'] or ''),
                      escape(letter['correlation_id'] or ''),
                      escape(body if len(body) <= 200 else body[:200] + '…'))
    return table
