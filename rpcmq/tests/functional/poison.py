"""The poison cast: a server process that dies on one cast, restarted
each time, as an operator's supervisor would.

Run as ``python -m rpcmq.tests.functional.poison URL TOPIC RUNLOG
[group.option=value ...]``: it serves ``run(n)`` on TOPIC with one worker,
appends ``n`` to RUNLOG before running it, and exits at once (``os._exit``,
like a segfault in a C library) when ``n`` is ``'poison'``.
"""

import os
import subprocess
import sys
import threading
import time
import uuid

from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.server import make_conf

__all__ = ['PoisonStory']

SERVER = 'p1'
BARRIER = 'barrier'


class Casts:

    def __init__(self, runlog):
        self.runlog = runlog

    def run(self, ctxt, n):
        with open(self.runlog, 'a') as f:
            f.write('%s\n' % n)
            f.flush()
            os.fsync(f.fileno())
        if n == 'poison':
            os._exit(3)


def _conf(options):
    return make_conf(**dict(option.split('=', 1) for option in options))


def main(argv):
    import rpcmq
    url, topic, runlog = argv[:3]
    transport = rpcmq.get_transport(_conf(argv[3:]), url=url)
    server = rpcmq.get_rpc_server(
        transport, rpcmq.Target(topic=topic, server=SERVER),
        [Casts(runlog)], executor='threading', executor_size=1)
    server.start(ready_timeout=60)
    print('serving', flush=True)
    threading.Event().wait()


class PoisonStory:
    """One poison cast and ``good`` casts behind it on a fresh topic."""

    def __init__(self, url, tmp_path, good=5, **options):
        import rpcmq
        self.url = url
        self.topic = 'poison_%s' % uuid.uuid4().hex[:8]
        self.runlog = str(tmp_path / ('%s.runs' % self.topic))
        self.logdir = tmp_path
        self.options = ['%s=%s' % item for item in options.items()]
        self.good = ['good-%d' % i for i in range(good)]
        self.transport = rpcmq.get_transport(_conf(self.options), url=url)
        self.client = rpcmq.RPCClient(self.transport,
                                      rpcmq.Target(topic=self.topic),
                                      timeout=30)
        self.starts = 0
        self.proc = None
        open(self.runlog, 'w').close()

    def cast_all(self):
        for n in ['poison'] + self.good:
            self.client.cast({}, 'run', n=n)
        assert self.transport.flush(30)

    def runs(self):
        """What the servers ran, in order (``BARRIER`` casts left out)."""
        return [n for n in self._logged() if n != BARRIER]

    def _logged(self):
        with open(self.runlog) as f:
            return f.read().split()

    def barrier(self):
        """A cast that, once a server starts it, proves every cast before
        it on the topic acked: the server takes one cast at a time
        (prefetch 1) and appends to the run log before running, so a
        cast in the log may not be acked yet. Killing the server then
        (``stop``) would have the broker hand that cast out again (at
        least once). The barrier itself may run again; ``runs`` leaves
        it out. Returns a function that is True once it started."""
        seen = self._logged().count(BARRIER)
        self.client.cast({}, 'run', n=BARRIER)
        assert self.transport.flush(30)
        return lambda: self._logged().count(BARRIER) > seen

    def _start(self):
        self.starts += 1
        log = open(self.logdir / ('%s.%d.log' % (self.topic, self.starts)),
                   'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'rpcmq.tests.functional.poison',
             self.url, self.topic, self.runlog] + self.options,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def supervise(self, until, timeout=120):
        """Keep one server running, restarting it whenever it dies, until
        ``until()``; then stop it. True if ``until()`` came in time."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if until():
                    return True
                if self.proc is None or self.proc.poll() is not None:
                    self._start()
                try:
                    self.proc.wait(0.1)  # a poll with a deadline
                except subprocess.TimeoutExpired:
                    pass
            return until()
        finally:
            self.stop()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def close(self):
        self.stop()
        self.transport.cleanup()
        delete_entities(self.url, [self.topic, '%s.%s' % (self.topic, SERVER),
                                   '%s_dead' % self.topic])


if __name__ == '__main__':
    main(sys.argv[1:])
