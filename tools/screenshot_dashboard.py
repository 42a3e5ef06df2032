"""Take the screenshot of the dashboard's batch page for the docs.

    python tools/screenshot_dashboard.py [docs/dashboard-batch.png] \
        [--count 60] [--chromium /usr/bin/chromium]

Runs the demo pipeline in this process (``rpcmq.testing.pipeline``: image
servers, conductor, file store, ``memory://`` transport; the demo's batch
of ``rpcmq.cmd.demo.demo_items``, two of them deliberately bad), serves
the dashboard beside it, waits until the batch has ended, then opens its
page in headless Chromium (Debian's ``chromium`` package, driven by
Playwright; nothing is downloaded) at 1280x900, signed in, with the
thumbnails in view loaded, and writes a PNG of the viewport.
"""

import argparse
import logging
import os
import secrets
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, os.pardir, 'docs', 'dashboard-batch.png')
VIEWPORT = {'width': 1280, 'height': 900}
#: Milliseconds the browser waits for what the page should come to show.
WAIT = 60_000
#: The images in the viewport have loaded (the others load lazily).
THUMBS_IN_VIEW_LOADED = """() => {
  const shown = Array.from(document.querySelectorAll('td.thumb img'))
    .filter(img => img.getBoundingClientRect().top < window.innerHeight);
  return shown.length > 0 &&
    shown.every(img => img.complete && img.naturalWidth > 0);
}"""


def wait_end(api, batch_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status = api.status(batch_id)
        if status['state'] not in ('open', 'pending', 'running'):
            return status
        if time.monotonic() > deadline:
            raise SystemExit('the batch did not end within %ss: %s'
                             % (timeout, status))
        time.sleep(0.2)


def shoot(url, batch_id, token, output, chromium):
    from playwright.sync_api import sync_playwright
    args = ['--no-sandbox'] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium,
                                     headless=True, args=args)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT)
            page.goto(url)
            page.fill('#token', token)
            page.click('#sign-in')
            page.wait_for_url(url)
            page.goto('%sbatches/%s' % (url, batch_id))
            page.wait_for_selector('body[data-batch-ended="yes"]',
                                   state='attached')
            # The page has had its end event and redrawn its table.
            page.wait_for_load_state('networkidle')
            page.wait_for_function(THUMBS_IN_VIEW_LOADED)
            page.screenshot(path=output)
        finally:
            browser.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('output', nargs='?', default=DEFAULT_OUTPUT,
                    help='PNG to write (default: docs/dashboard-batch.png)')
    ap.add_argument('--count', type=int, default=60,
                    help='images in the batch (default: 60)')
    ap.add_argument('--chromium', default='/usr/bin/chromium',
                    help='the Chromium to drive (default: Debian\'s, '
                         '/usr/bin/chromium; apt-get install chromium)')
    ap.add_argument('--timeout', type=float, default=300,
                    help='seconds the batch may take (default: 300)')
    args = ap.parse_args()
    if not os.access(args.chromium, os.X_OK):
        raise SystemExit('no Chromium at %s (apt-get install chromium)'
                         % args.chromium)
    # The demo's bad items log warnings; the screenshot shows them.
    logging.basicConfig(level=logging.ERROR)

    from rpcmq.cmd.demo import demo_items
    from rpcmq.dashboard.app import Dashboard
    from rpcmq.testing.pipeline import Pipeline

    output = os.path.abspath(args.output)
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix='rpcmq-shot-') as workdir:
        with Pipeline(workdir) as pipeline:
            pipeline.conf.set_override('auth_token', token,
                                       group='dashboard')
            dashboard = Dashboard(pipeline.conf, pipeline.transport,
                                  port=0).start()
            try:
                batch_id = pipeline.api.submit(
                    demo_items(pipeline.images, args.count))
                end = wait_end(pipeline.api, batch_id, args.timeout)
                shoot(dashboard.url, batch_id, token, output, args.chromium)
            finally:
                dashboard.stop()
    totals = end['totals']
    print('%s: batch %s, %s: %d done, %d failed of %d' % (
        output, batch_id, end['state'], totals['done'], totals['failed'],
        totals['total']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
