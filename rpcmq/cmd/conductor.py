"""rpcmq-conductor: run the batch conductor from config."""

from rpcmq.cmd import patching

patching.monkey_patch()  # first thing; see os_threads_if_configured

import logging  # noqa: E402
import sys  # noqa: E402

from rpcmq.cmd import service  # noqa: E402
from rpcmq.exceptions import RpcmqError  # noqa: E402

LOG = logging.getLogger('rpcmq.conductor')


def main(argv=None):
    import sqlalchemy.exc
    from oslo_config import cfg

    from rpcmq.conductor.db import BatchStore
    from rpcmq.conductor.service import ConductorService
    from rpcmq.transport import get_transport

    conf = service.prepare_daemon(argv, 'rpcmq-conductor', [cfg.BoolOpt(
        'upgrade-db', default=False,
        help='create or upgrade the database schema of [conductor] '
             'connection, then exit')])
    if conf.upgrade_db:
        try:
            store = BatchStore(conf.conductor.connection)
            before, after = store.upgrade()
            store.close()
        except (RpcmqError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            service.fatal(exc)
        print('conductor database %s: schema %s' % (
            store, 'already at %s' % after if before == after else
            'upgraded from %s to %s' % (before or 'empty', after)))
        return 0
    try:
        transport = get_transport(conf)
        conductor = ConductorService(conf, transport, executor=conf.executor)
    except (RpcmqError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        service.fatal(exc)
    LOG.info('conductor %s: database %s, images on topic %s', conf.host,
             conductor.store, conf.conductor.image_topic)
    code = service.run_until_signalled(conductor, conf, 'rpcmq-conductor')
    transport.cleanup()
    return code


if __name__ == '__main__':
    sys.exit(main())
