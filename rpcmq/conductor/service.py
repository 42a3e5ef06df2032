"""The conductor service: its database, scheduler and RPC server together.

Start order: database (schema created or upgraded, see migrate),
scheduler (which first recovers what a dead conductor left running), then
the RPC server. Stop order is the reverse: stop taking requests, stop
claiming, wait for items in flight.
"""

import time

from rpcmq.conductor.db import BatchStore
from rpcmq.conductor.manager import BatchEndpoint
from rpcmq.conductor.scheduler import Scheduler
from rpcmq.observe import metrics
from rpcmq.rpc.server import get_rpc_server
from rpcmq.target import Target

__all__ = ['ConductorService']


class ConductorService:

    def __init__(self, conf, transport, executor='threading'):
        self.conf = conf
        self.store = BatchStore(conf.conductor.connection)
        if conf.conductor.auto_upgrade_db:
            self.store.upgrade()
        else:
            self.store.require_current()
        self.scheduler = Scheduler(conf, transport, self.store,
                                   executor=executor)
        self.endpoint = BatchEndpoint(self.store, self.scheduler)
        metrics.watch_conductor(self.store)
        self.server = get_rpc_server(
            transport, Target(topic=conf.conductor.topic, server=conf.host),
            [self.endpoint], executor=executor, executor_size=16)

    def start(self):
        """Start; True if the RPC server is consuming already."""
        self.scheduler.start()
        return self.server.start()

    def stop(self):
        self.server.stop()
        self.scheduler.stop()

    def health(self):
        """None while it serves and runs batches; else why not."""
        return self.server.health() or self.scheduler.problem() or \
            self.store.ping()

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout

        def left():
            return None if deadline is None else \
                max(0.0, deadline - time.monotonic())
        done = self.server.wait(left())
        done = self.scheduler.wait(left()) and done
        self.store.close()
        return done
