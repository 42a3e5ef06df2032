"""total_timeout under eventlet monkey-patching, as rpcmq daemons run.

The downloads run in a fresh interpreter (monkey-patching would spoil this
test process); the image server stays here, on OS threads.
"""

import json
import os
import subprocess
import sys

# Two dripping downloads and one quick one share a Fetcher, each on its own
# green thread: every download must keep its own deadline.
SCRIPT = '''
import eventlet
eventlet.monkey_patch()

import json, sys, time
from rpcmq.fetch import DownloadFailed, Fetcher, FetchOptions

drip_url, image_url, spool = sys.argv[1:4]
fetcher = Fetcher(FetchOptions(total_timeout=1.0, read_timeout=5.0,
                               retries=2, allow_private_networks=True))

def run(url):
    start = time.monotonic()
    try:
        outcome = "%d bytes" % fetcher.download(url, spool).size
    except DownloadFailed as exc:
        outcome = "%s attempts=%s" % (exc, exc.attempts)
    return outcome, time.monotonic() - start

drips = [eventlet.spawn(run, drip_url) for _ in range(2)]
image = eventlet.spawn(run, image_url)
print(json.dumps({"patched": eventlet.patcher.is_monkey_patched("socket"),
                  "drips": [g.wait() for g in drips],
                  "image": image.wait()}))
'''


def test_total_timeout_bounds_green_downloads(server, tmp_path):
    drip = server.url('/drip?delay=0.25&bytes=40')
    image = server.url('/img/green.png')
    env = {k: v for k, v in os.environ.items() if k != 'RPCMQ_OS_THREADS'}
    proc = subprocess.run(
        [sys.executable, '-c', SCRIPT, drip, image, str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome['patched'] is True
    for reason, elapsed in outcome['drips']:
        assert 'total_timeout' in reason and 'attempts=1' in reason, reason
        assert elapsed < 1.0 + 3.0, 'took %.1fs' % elapsed
    assert outcome['image'][0].endswith(' bytes'), outcome['image']
    assert server.count('/drip') == 2
    # The image, and no partial file of the drips.
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].endswith('.png'), files
