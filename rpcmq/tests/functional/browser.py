"""Headless Chromium for the dashboard's browser tests, and the daemons
those tests drive it against.

The browser is Debian's ``chromium`` package, driven by the Python
``playwright`` package (the ``test`` extra); Playwright's own browser
downloads are never used. Without the browser the tests fail when
CI=true (CI must have it: ``.ci/run`` installs it) and are skipped with
the reason otherwise.

``DashboardStack`` is the batch pipeline as real processes (see
``fixtures.Cluster``: one ``rpcmq-server`` with the ``image`` and ``diag``
endpoints and a file store, one ``rpcmq-conductor`` on SQLite) plus an
``rpcmq-dashboard`` daemon on a port of its own, signed in by ``TOKEN``.
"""

import os
import socket
import time
import urllib.error
import urllib.request

import pytest

from rpcmq.tests.functional.daemons import write_config
from rpcmq.tests.functional.fixtures import Cluster, unique

__all__ = ['CHROMIUM', 'DashboardStack', 'artifact_dir', 'launch',
           'require_chromium']

CHROMIUM = '/usr/bin/chromium'
#: The dashboard's [dashboard] auth_token in these tests.
TOKEN = 'browser-test-token-%s' % os.urandom(8).hex()


def _missing(reason):
    if os.environ.get('CI') == 'true':
        pytest.fail('CI runs the browser tests, but %s' % reason,
                    pytrace=False)
    pytest.skip(reason)


def require_chromium():
    """Fail (CI) or skip unless Chromium and Playwright are here."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing('there is no Chromium at %s (apt-get install chromium)'
                 % CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _missing('the playwright package is missing (pip install -e '
                 '.[test]): %s' % exc)


def launch(playwright):
    """Headless Debian Chromium; ``--no-sandbox`` when running as root
    (Chromium refuses to start sandboxed as root)."""
    args = ['--no-sandbox'] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=CHROMIUM,
                                      headless=True, args=args)


def artifact_dir(tmp_path):
    """Where tests leave files for people to look at: $RPCMQ_TEST_ARTIFACTS
    if set (created), else the test's ``tmp_path``."""
    where = os.environ.get('RPCMQ_TEST_ARTIFACTS')
    if not where:
        return tmp_path
    os.makedirs(where, exist_ok=True)
    return where


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class DashboardStack(Cluster):
    """One image server, a conductor and a dashboard, as daemons.

    Every name on the broker is unique to the stack (``Cluster``), so
    other runs on the same broker neither see nor take its messages. The
    servers and the dashboard share ``store_dir``, a file store: the
    dashboard draws thumbnails from the stored images.
    """

    def __init__(self, workdir, rabbit_url, executor_size=4,
                 conductor_opts=None):
        self.store_dir = workdir / 'store'
        super().__init__(
            workdir, rabbit_url, oss_endpoint='', hosts=('img-dash',),
            server_opts={
                'DEFAULT': {'endpoints': 'image,diag', 'store': 'file',
                            'executor_thread_pool_size': executor_size},
                'file_store': {'root': self.store_dir},
                # A failed download fails its call: the tests decide
                # what runs again (the conductor's item_retries, Retry).
                'image': {'download_retries': 0},
                # The dashboard starts after the server: hear it soon.
                'status': {'announce_interval': 1},
            },
            conductor_opts={'conductor': dict(conductor_opts or {})})
        self.dashboard = None
        self.dashboard_host = unique('dashboard-host')
        self.url = None

    def dashboard_config(self, port):
        return write_config(self.workdir / 'dashboard.conf', {
            'DEFAULT': dict(self._common(self.dashboard_host),
                            store='file', topic=self.image_topic),
            'conductor': {'topic': self.conductor_topic,
                          'image_topic': self.image_topic},
            'file_store': {'root': self.store_dir},
            'dashboard': {'host': '127.0.0.1', 'port': port,
                          'auth_token': TOKEN},
        })

    def start_dashboard(self, timeout=30):
        """Start rpcmq-dashboard and wait until its /healthz says it
        hears the broker's notifications."""
        port = free_port()
        self.dashboard = self._daemon('rpcmq-dashboard',
                                      self.dashboard_config(port),
                                      'dashboard')
        self.dashboard.wait_for_log('rpcmq-dashboard started',
                                    timeout=timeout)
        self.url = 'http://127.0.0.1:%d/' % port
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + 'healthz',
                                            timeout=5) as answer:
                    if answer.status == 200:
                        return self.dashboard
            except (urllib.error.URLError, OSError) as exc:
                problem = exc
            if time.monotonic() > deadline or \
                    self.dashboard.proc.poll() is not None:
                raise AssertionError('rpcmq-dashboard is not healthy at %s '
                                     '(%s); log:\n%s' % (
                                         self.url, problem,
                                         self.dashboard.log()))
            time.sleep(0.1)

    def start(self):
        self.start_servers()
        self.listen()
        self.start_conductor('sqlite:///%s' % (self.workdir /
                                               'conductor.sqlite'))
        self.start_dashboard()
        return self

    def close(self):
        codes = {}
        if self.dashboard is not None and self.dashboard.proc.poll() is None:
            try:
                codes['dashboard'] = self.dashboard.terminate(timeout=20)
            except Exception:
                self.dashboard.stop()
                codes['dashboard'] = 'killed'
        codes.update(super().close())
        return codes
