"""rpcmq-bridge-redis: batch download tasks from a Redis list.

Threads, no eventlet: one thread takes tasks, the notification listener
pushes the replies.
"""

import logging
import sys

from rpcmq.cmd import service
from rpcmq.exceptions import RpcmqError

LOG = logging.getLogger('rpcmq.bridge.redis')


def main(argv=None):
    import redis

    from rpcmq.bridges.redis import RedisBridge
    from rpcmq.transport import get_transport

    conf = service.prepare(sys.argv[1:] if argv is None else argv,
                           'rpcmq-bridge-redis')
    group = conf.redis_bridge
    try:
        transport = get_transport(conf)
        bridge = RedisBridge(conf, transport)
    except (RpcmqError, ValueError) as exc:
        service.fatal(exc)
    try:
        bridge.redis.ping()
    except redis.RedisError as exc:
        LOG.warning('redis is not reachable yet (%s); retrying', exc)
    LOG.info('taking tasks from %s (in flight: %s, invalid: %s), replying '
             'on %s_<task_id>', group.tasks_list, bridge.processing,
             bridge.invalid, group.reply_prefix)
    code = service.run_until_signalled(bridge, conf, 'rpcmq-bridge-redis')
    transport.cleanup()
    return code


if __name__ == '__main__':
    sys.exit(main())
