"""Fail when etc/rpcmq/rpcmq.conf.sample differs from what the options say.

Run ``tox -e genconfig`` to regenerate it.
"""

import difflib
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, 'etc', 'rpcmq', 'rpcmq.conf.sample')


def main():
    with tempfile.TemporaryDirectory() as tmp:
        fresh = os.path.join(tmp, 'rpcmq.conf.sample')
        subprocess.run(['oslo-config-generator', '--config-file',
                        os.path.join(ROOT, 'tools', 'config-generator.conf'),
                        '--output-file', fresh], check=True, cwd=ROOT)
        with open(fresh) as f:
            want = f.readlines()
    try:
        with open(SAMPLE) as f:
            have = f.readlines()
    except FileNotFoundError:
        have = []
    if want != have:
        sys.stdout.writelines(difflib.unified_diff(
            have, want, 'checked in', 'generated'))
        print('\n%s is stale: run tox -e genconfig and commit it' % SAMPLE)
        return 1
    print('sample config is current')
    return 0


if __name__ == '__main__':
    sys.exit(main())
