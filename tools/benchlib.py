"""Shared parts of ``bench_image.py`` and ``bench_pipeline.py``.

Both benchmarks move images from a local image server process to a local
OSS-compatible server process (``rpcmq.testing.ossserver``) and compare
rpcmq with a "bare" worker process: ``conc`` threads, each doing a
requests download to a temporary file and an oss2 upload.

Helper processes are children of the benchmark: the image server and the
bare worker re-run the benchmark script with ``--serve-images`` or
``--bare-worker`` (which call ``serve_images`` and ``bare_worker`` here),
so they import what the benchmark imports. Every helper is recorded as
``(Popen, how)`` in a ``children`` list for ``stop``; ``how`` is
``'stdin'`` (close its stdin) or a signal number.

``tools/`` is not a package: a script imports this module after putting
its own directory on ``sys.path``.

This module imports only the standard library at import time, so that the
bare worker's memory is not inflated by it.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1024 * 1024
#: Multipart upload settings of the oss store and of the bare worker.
# The oss store's defaults ([oss] multipart_threshold, part_size).
THRESHOLD, PART_SIZE, UPLOAD_THREADS = 64 * MIB, 8 * MIB, 4


def image_urls(base, scenario, n, kb, ext=None):
    """``n`` distinct URLs (so distinct keys) of ``kb`` KiB images (the
    image server's default size if ``kb`` is 0), named after ``scenario``.

    At most ~128 MiB of distinct bodies, so the image server's cache
    (256 MiB) keeps them all. ``ext`` defaults to ``jpg`` up to 1 MiB,
    ``png`` above.
    """
    if ext is None:
        ext = 'jpg' if kb <= 1024 else 'png'
    kind = '?kb=%d&' % kb if kb else '?'
    bodies = max(1, min(n, int(128 * 1024 // max(kb, 4))))
    return ['%s/img/%s%d.%s%sn=%d' % (base, scenario, i % bodies, ext, kind,
                                      i) for i in range(n)]


def warm_image_cache(urls, conc):
    """Fetch each distinct body among ``urls`` once (``conc`` at a time) so
    the image server has generated and cached it before timing starts."""
    import requests
    seen = {}
    for url in urls:  # the body does not depend on n=
        seen.setdefault(url.rsplit('n=', 1)[0], url)
    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        list(pool.map(lambda u: requests.get(u, timeout=600).content,
                      seen.values()))


def add_args(ap, conc, large_n, large_mb, conc_help=None):
    """Add the options both benchmarks take (with these defaults) and the
    hidden ``--serve-images`` and ``--bare-worker`` (see ``run_helper``).
    """
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--conc', type=int, default=conc, help=conc_help)
    ap.add_argument('--small-n', type=int, default=1000)
    ap.add_argument('--small-kb', type=int, default=100)
    ap.add_argument('--large-n', type=int, default=large_n)
    ap.add_argument('--large-mb', type=int, default=large_mb)
    ap.add_argument('--serve-images', action='store_true',
                    help=argparse.SUPPRESS)
    ap.add_argument('--bare-worker', action='store_true',
                    help=argparse.SUPPRESS)


def run_helper(a, make_bucket):
    """If ``a`` (parsed ``add_args`` options) asks for a helper process,
    run it (``serve_images`` or ``bare_worker(make_bucket)``) and return
    True once it is done; else return False."""
    if a.serve_images:
        serve_images()
    elif a.bare_worker:
        bare_worker(make_bucket)
    else:
        return False
    return True


# -- /proc ------------------------------------------------------------------

def proc_memory(pid='self'):
    """``{'VmRSS': MiB, 'VmHWM': MiB}`` of ``pid`` (an int or ``'self'``)."""
    with open('/proc/%s/status' % pid) as f:
        status = dict(line.split(':', 1) for line in f if ':' in line)
    return {name: int(status[name].split()[0]) / 1024.0
            for name in ('VmRSS', 'VmHWM')}


def cpu_seconds(pid='self'):
    """User + system CPU time of ``pid`` (all its threads) so far."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def reset_peak(pid='self'):
    """Reset the VmHWM (peak RSS) of ``pid`` to its current RSS."""
    with open('/proc/%s/clear_refs' % pid, 'w') as f:
        f.write('5')


def measure(pid, work):
    """Run ``work()``, which returns the sizes of the files it moved, and
    watch ``pid`` meanwhile (its VmHWM is reset first).

    Returns ``elapsed`` (s), ``bytes``, ``rss_before`` and ``hwm`` (MiB)
    and ``cpu`` (CPU seconds ``pid`` used).
    """
    reset_peak(pid)
    before = proc_memory(pid)['VmRSS']
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    sizes = work()
    elapsed = time.perf_counter() - started
    return {'elapsed': elapsed, 'bytes': sum(sizes), 'rss_before': before,
            'cpu': cpu_seconds(pid) - cpu, 'hwm': proc_memory(pid)['VmHWM']}


# -- helper processes --------------------------------------------------------

def spawn(args, children, how, banner=True):
    """Start a helper with piped stdin and stdout, record it in
    ``children`` (stopped by ``how``); return it and the first line it
    prints (None unless ``banner``)."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    children.append((proc, how))
    return proc, proc.stdout.readline().strip() if banner else None


def stop(children):
    """Stop the helpers, last started first (close stdin or send the
    signal), then wait for them; kill one that takes over a minute."""
    for proc, how in reversed(children):
        if proc.poll() is None:
            if how == 'stdin':
                proc.stdin.close()
            else:
                proc.send_signal(how)
    for proc, _how in children:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_in_workdir(prefix, run):
    """Call ``run(workdir, children)`` in a fresh temporary directory;
    ``stop`` the helpers it recorded in ``children`` however it ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        children = []
        try:
            run(workdir, children)
        finally:
            stop(children)


def ask(proc, message):
    """Send ``message`` to a helper as a JSON line; return its JSON reply."""
    proc.stdin.write(json.dumps(message) + '\n')
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def serve_images():
    """Main of the image server helper: serve until stdin is closed; the
    first line printed is the server's base URL."""
    from rpcmq.testing.imageserver import ImageServer
    with ImageServer() as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def start_image_server(script, children):
    """Start ``script --serve-images``; return the image server's base
    URL."""
    return spawn([sys.executable, script, '--serve-images'], children,
                 'stdin')[1]


def start_oss(children, root, bucket, key_id, secret, region=None):
    """Start ``rpcmq.testing.ossserver`` on a new directory ``root`` with
    one bucket and one key (V4 signatures need ``region``); return its
    endpoint."""
    os.mkdir(root)
    args = [sys.executable, '-m', 'rpcmq.testing.ossserver',
            '--bucket', bucket, '--root', root]
    if region is not None:
        args += ['--region', region]
    _proc, banner = spawn(args + ['--credentials', '%s:%s' % (key_id, secret)],
                          children, signal.SIGINT)
    return banner.split(' on ', 1)[1].split(',', 1)[0]


# -- the bare worker ---------------------------------------------------------

def bare_transfer(make_bucket, spool):
    """Return ``transfer((url, key)) -> size`` for worker threads.

    Each thread gets its own ``make_bucket()`` (an ``oss2.Bucket``) and
    requests session. ``transfer`` downloads ``url`` to a temporary file in
    ``spool`` and uploads it as ``key``: one PutObject, or a resumable
    multipart upload from ``THRESHOLD`` on, as the oss store does.
    """
    import oss2
    import requests
    local = threading.local()

    def transfer(job):
        url, key = job
        if not hasattr(local, 'bucket'):
            local.bucket = make_bucket()
            local.http = requests.Session()
        fd, path = tempfile.mkstemp(dir=spool)
        try:
            size = 0
            with local.http.get(url, stream=True, timeout=60) as resp, \
                    os.fdopen(fd, 'wb') as f:
                resp.raise_for_status()
                for chunk in resp.iter_content(64 * 1024):
                    f.write(chunk)
                    size += len(chunk)
            if size >= THRESHOLD:
                oss2.resumable_upload(
                    local.bucket, key, path,
                    store=oss2.ResumableStore(root=spool),
                    multipart_threshold=THRESHOLD, part_size=PART_SIZE,
                    num_threads=UPLOAD_THREADS)
            else:
                local.bucket.put_object_from_file(key, path)
            return size
        finally:
            os.unlink(path)

    return transfer


def bare_worker(make_bucket):
    """Main of the bare worker helper.

    Reads a spec (``endpoint``, ``conc``, ``spool``, ``warmup`` jobs) as a
    JSON line from stdin, makes the warmup transfers and answers
    ``{"ready": true}``; then for each JSON list of ``(url, key)`` jobs it
    reads, transfers them with ``conc`` threads and answers with
    ``measure`` of itself. ``make_bucket(endpoint)`` returns an
    ``oss2.Bucket``.
    """
    spec = json.loads(sys.stdin.readline())
    transfer = bare_transfer(lambda: make_bucket(spec['endpoint']),
                             spec['spool'])
    with concurrent.futures.ThreadPoolExecutor(spec['conc']) as pool:
        list(pool.map(transfer, spec['warmup']))
        print(json.dumps({'ready': True}), flush=True)
        for line in sys.stdin:
            jobs = json.loads(line)
            result = measure('self', lambda j=jobs: list(
                pool.map(transfer, j)))
            print(json.dumps(result), flush=True)


def start_bare_worker(script, children, workdir, endpoint, conc, warmup):
    """Start ``script --bare-worker`` with ``conc`` threads and a spool
    directory in ``workdir``; return it once it has done the ``warmup``
    jobs. Then ``ask(worker, jobs)`` returns ``measure`` of a list of
    jobs."""
    spool = os.path.join(workdir, 'bare-%d' % conc)
    os.mkdir(spool)
    worker, _ = spawn([sys.executable, script, '--bare-worker'], children,
                      'stdin', banner=False)
    ask(worker, {'endpoint': endpoint, 'conc': conc, 'spool': spool,
                 'warmup': warmup})
    return worker
