"""``rpcmq demo --dashboard``: the first command a user runs shows the
dashboard of its own batch, and Ctrl-C ends it cleanly."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx


def _lines(stream, out):
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_for(lines, pattern, deadline, seen):
    """The first match of ``pattern`` in the lines to come (all kept in
    ``seen``)."""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, 'no %r in:\n%s' % (pattern, ''.join(seen))
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        assert line is not None, 'exited; printed:\n%s' % ''.join(seen)
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found


def test_the_demo_serves_its_batch_on_the_dashboard_until_ctrl_c(tmp_path):
    temp = tmp_path / 'tmp'
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), COLUMNS='200')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rpcmq.cmd.cli', 'demo', '--count', '12',
         '--dashboard', '--dashboard-port', '0'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env)
    lines, seen = queue.Queue(), []
    threading.Thread(target=_lines, args=(proc.stderr, lines),
                     daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        found = _wait_for(lines, r'dashboard: (http://\S+) \(sign in with '
                                 r'the token (\S+)\)', deadline, seen)
        url, token = found.group(1), found.group(2)
        _wait_for(lines, 'the dashboard stays up until Ctrl-C', deadline,
                  seen)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get('/', headers={'accept': 'text/html'}) \
                .status_code == 303  # the token is needed
            signed = client.post('/login', data={'token': token})
            assert signed.status_code == 303
            page = client.get('/')
            assert page.status_code == 200
            assert 'done with failures' in page.text  # the 2 bad URLs
            # Its two image servers, listed already (they announce every
            # 10 s, and once more when the dashboard starts).
            servers = client.get('/servers').text
            assert servers.count('class="state alive"') == 2, servers
            assert 'demo-1' in servers and 'demo-2' in servers
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        _wait_for(lines, 'rpcmq demo: stopped', time.monotonic() + 10,
                  seen)
    finally:
        proc.kill()
    assert proc.returncode == 0, ''.join(seen)
    assert 'Traceback' not in ''.join(seen)
    assert list(temp.iterdir()) == []  # the temporary directory is gone
