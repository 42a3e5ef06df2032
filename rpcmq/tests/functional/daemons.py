"""Start rpcmq daemons as real processes from a generated config file."""

import os
import signal
import subprocess
import sys
import time

__all__ = ['Daemon', 'write_config']


def write_config(path, sections):
    """Write an oslo.config file: {'DEFAULT': {'k': 'v'}, 'rabbit': {...}}."""
    with open(path, 'w') as f:
        for section, values in sections.items():
            f.write('[%s]\n' % section)
            for key, value in values.items():
                f.write('%s = %s\n' % (key, value))
    return str(path)


class Daemon:
    """A daemon process (``rpcmq-server``, ``rpcmq-conductor``...)."""

    def __init__(self, program, config_file, log_path):
        self.program = program
        self.config_file = config_file
        self.log_path = str(log_path)
        self.proc = None

    def start(self):
        log = open(self.log_path, 'ab')
        exe = os.path.join(os.path.dirname(sys.executable), self.program)
        self.proc = subprocess.Popen([exe, '--config-file', self.config_file],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_for_log(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError('%s never logged %r; log:\n%s'
                             % (self.program, text, self.log()))

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def terminate(self, timeout=30):
        """SIGTERM; return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
