"""Benchmark the batch pipeline; prints one JSON line per measurement.

What moves: images from a local image server process to a local
OSS-compatible server process (``rpcmq.testing.ossserver``, V4 signatures;
the store is OSS, not the file store). Two systems do the same work:

  pipeline  one batch submitted with ConductorAPI to an ``rpcmq-conductor``
            daemon, which drives two ``rpcmq-server`` daemons (image.fetch
            then image.store) over RabbitMQ; timed from submit to the
            ``batch.end`` notification; ``max_inflight`` and
            ``max_inflight_per_batch`` = ``--conc``
  bare      a worker process runs ``--conc`` threads, each doing a
            requests download to a temporary file and an oss2 upload (one
            PutObject, or a resumable multipart upload from 10 MiB on, as
            the oss store does); no broker, no database

Scenarios: ``small`` (``--small-n`` x ``--small-kb`` KiB JPEGs) and
``large`` (``--large-n`` x ``--large-mb`` MiB PNGs). Lines give items/s,
MB/s (10^6 bytes), the pipeline's ratio to bare and the peak RSS (VmHWM,
reset before each scenario) of every daemon and of the bare worker.

``--rss-check`` runs ``--rss-n`` (default 1000,10000) tiny items, each
batch on a fresh conductor with a fresh SQLite database, and reports the
conductor's RSS after its ``batch.end`` and its peak, to show whether the
conductor's memory grows with the batch size.

Usage: python tools/bench_pipeline.py [--url rabbit://...] [--conc 32]
       [--small-n 1000] [--small-kb 100] [--large-n 50] [--large-mb 10]
       [--rss-check [--rss-n 1000,10000] [--no-throughput]]
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

from rpcmq.tests.functional.fixtures import OSS, Cluster, proc_memory

MIB = 1024 * 1024
THRESHOLD, PART_SIZE, UPLOAD_THREADS = 10 * MIB, 5 * MIB, 4
STORE = 'oss (rpcmq.testing.ossserver, V4 auth, child process)'


def image_urls(base, scenario, n, kb):
    """``n`` distinct URLs (distinct keys); at most ~128 MiB of distinct
    bodies so the image server's cache (256 MiB) keeps them all."""
    ext = 'jpg' if kb <= 1024 else 'png'
    kind = '?kb=%d&' % kb if kb else '?'
    bodies = max(1, min(n, int(128 * 1024 // max(kb, 4))))
    return ['%s/img/%s%d.%s%sn=%d' % (base, scenario, i % bodies, ext, kind,
                                      i) for i in range(n)]


def cpu_seconds(pid):
    """User + system CPU time of ``pid`` so far."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def reset_peak(pid):
    with open('/proc/%s/clear_refs' % pid, 'w') as f:
        f.write('5')  # VmHWM := current RSS


# -- child processes ------------------------------------------------------

def serve_images():
    from rpcmq.testing.imageserver import ImageServer
    with ImageServer() as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def bare_worker():
    """Transfer the URL lists read from stdin; one JSON result per list."""
    import oss2
    import requests
    spec = json.loads(sys.stdin.readline())
    auth = oss2.AuthV4(OSS['access_key_id'], OSS['access_key_secret'])
    local = threading.local()
    spool = spec['spool']

    def bucket():
        if not hasattr(local, 'bucket'):
            local.bucket = oss2.Bucket(auth, spec['endpoint'], OSS['bucket'],
                                       region=OSS['region'], enable_crc=True)
            local.http = requests.Session()
        return local.bucket

    def transfer(job):
        url, key = job
        b = bucket()
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
                    b, key, path, store=oss2.ResumableStore(root=spool),
                    multipart_threshold=THRESHOLD, part_size=PART_SIZE,
                    num_threads=UPLOAD_THREADS)
            else:
                b.put_object_from_file(key, path)
            return size
        finally:
            os.unlink(path)

    with concurrent.futures.ThreadPoolExecutor(spec['conc']) as pool:
        list(pool.map(transfer, spec['warmup']))
        print(json.dumps({'ready': True}), flush=True)
        for line in sys.stdin:
            jobs = json.loads(line)
            reset_peak('self')
            cpu = cpu_seconds('self')
            started = time.perf_counter()
            sizes = list(pool.map(transfer, jobs))
            elapsed = time.perf_counter() - started
            print(json.dumps({'elapsed': elapsed, 'bytes': sum(sizes),
                              'cpu_s': cpu_seconds('self') - cpu,
                              'hwm': proc_memory(os.getpid())['VmHWM']}),
                  flush=True)


def spawn(args, children, how, banner=True):
    """Start a helper; return it and the first line it prints."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    children.append((proc, how))
    return proc, proc.stdout.readline().strip() if banner else None


def stop(children):
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


# -- the pipeline -------------------------------------------------------

def run_batch(cluster, urls, timeout):
    """Submit ``urls`` as one batch; return its timing, bytes and the
    daemons' peak RSS (MiB)."""
    pids = dict({h: d.proc.pid for h, d in cluster.servers.items()},
                conductor=cluster.conductor.proc.pid)
    cpu = {}
    for name, pid in pids.items():
        reset_peak(pid)
        cpu[name] = cpu_seconds(pid)
    started = time.perf_counter()
    batch_id = cluster.submit([{'url': u} for u in urls])
    end = cluster.wait_end(batch_id, timeout=timeout)
    elapsed = time.perf_counter() - started
    mem = cluster.memory()
    cpu = {name: round(cpu_seconds(pid) - cpu[name], 1)
           for name, pid in pids.items()}
    done = [i for i in end['items'] if i['state'] == 'done']
    if len(done) != len(urls):
        failed = [i for i in end['items'] if i['state'] != 'done'][:3]
        raise SystemExit('batch %s: %d of %d items done; e.g. %s'
                         % (batch_id, len(done), len(urls), failed))
    return {'elapsed': elapsed, 'bytes': sum(i['result']['size']
                                             for i in done),
            'cpu_s': cpu,
            'rss_peak_mb': {k: round(v['VmHWM'], 1) for k, v in mem.items()},
            'rss_mb': {k: round(v['VmRSS'], 1) for k, v in mem.items()}}


def rate(n, r):
    return {'items_per_s': round(n / r['elapsed'], 2),
            'mb_per_s': round(r['bytes'] / r['elapsed'] / 1e6, 2),
            'seconds': round(r['elapsed'], 2)}


def progress(text):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), text))
    sys.stderr.flush()


def emit(**line):
    print(json.dumps(line), flush=True)


def throughput(a, cluster, base, endpoint, workdir, children):
    me = [sys.executable, os.path.abspath(__file__)]
    bare_spool = os.path.join(workdir, 'bare')
    os.mkdir(bare_spool)
    bare, _ = spawn(me + ['--bare-worker'], children, 'stdin', banner=False)
    scenarios = [('small', a.small_n, a.small_kb),
                 ('large', a.large_n, a.large_mb * 1024)]
    urls = {s: image_urls(base, s, n, kb) for s, n, kb in scenarios}
    progress('warming the image cache')
    warm_image_cache([u for s in urls.values() for u in s], a.conc)
    progress('warming the bare worker and the pipeline')
    warmup = image_urls(base, 'warm', a.conc * 2, 50)
    bare.stdin.write(json.dumps({
        'endpoint': endpoint, 'conc': a.conc, 'spool': bare_spool,
        'warmup': [(u, 'bare/warm/%d' % i) for i, u in enumerate(warmup)]})
        + '\n')
    bare.stdin.flush()
    json.loads(bare.stdout.readline())
    run_batch(cluster, warmup, timeout=120)
    for scenario, n, kb in scenarios:
        progress('%s: pipeline, %d items' % (scenario, n))
        p = run_batch(cluster, urls[scenario], timeout=1800)
        progress('%s: bare' % scenario)
        bare.stdin.write(json.dumps([
            (u, 'bare/%s/%d' % (scenario, i))
            for i, u in enumerate(urls[scenario])]) + '\n')
        bare.stdin.flush()
        b = json.loads(bare.stdout.readline())
        common = {'scenario': scenario, 'items': n, 'item_kb': kb,
                  'conc': a.conc, 'store': STORE}
        pr, br = rate(n, p), rate(n, b)
        emit(system='pipeline', **common, **pr, cpu_s=p['cpu_s'],
             rss_peak_mb=p['rss_peak_mb'])
        emit(system='bare', **common, **br,
             cpu_s={'bare_worker': round(b['cpu_s'], 1)},
             rss_peak_mb={'bare_worker': round(b['hwm'], 1)})
        emit(scenario=scenario, ratio_pipeline_to_bare=round(
            pr['items_per_s'] / br['items_per_s'], 3))


def warm_image_cache(urls, conc):
    import requests
    seen = {}
    for url in urls:  # one request per distinct body
        seen.setdefault(url.rsplit('n=', 1)[0], url)
    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        list(pool.map(lambda u: requests.get(u, timeout=600).content,
                      seen.values()))


def rss_check(a, cluster, base, workdir):
    for n in a.rss_n:
        cluster.stop_conductor()
        cluster.start_conductor('sqlite:///%s' % os.path.join(
            workdir, 'rss-%d.sqlite' % n))
        before = proc_memory(cluster.conductor.proc.pid)['VmRSS']
        progress('rss: %d items' % n)
        r = run_batch(cluster, image_urls(base, 'rss%d' % n, n, 0),
                      timeout=3600)
        emit(scenario='rss', items=n, conc=a.conc, **rate(n, r),
             conductor_rss_start_mb=round(before, 1),
             conductor_rss_after_mb=r['rss_mb']['conductor'],
             conductor_rss_peak_mb=r['rss_peak_mb']['conductor'],
             cpu_s=r['cpu_s'],
             server_rss_peak_mb={k: v for k, v in r['rss_peak_mb'].items()
                                 if k != 'conductor'})


def run(a, workdir, children):
    me = [sys.executable, os.path.abspath(__file__)]
    _images, base = spawn(me + ['--serve-images'], children, 'stdin')
    oss_root = os.path.join(workdir, 'oss')
    os.mkdir(oss_root)
    _oss, banner = spawn([
        sys.executable, '-m', 'rpcmq.testing.ossserver',
        '--bucket', OSS['bucket'], '--root', oss_root,
        '--region', OSS['region'], '--credentials',
        '%s:%s' % (OSS['access_key_id'], OSS['access_key_secret'])],
        children, signal.SIGINT)
    endpoint = banner.split(' on ', 1)[1].split(',', 1)[0]
    cluster = Cluster(
        pathlib.Path(workdir), a.url, endpoint,
        server_opts={'DEFAULT': {'executor_thread_pool_size':
                                 max(64, a.conc)},
                     'image': {'download_retries': 3},
                     'oss': {'multipart_threshold': THRESHOLD,
                             'part_size': PART_SIZE,
                             'upload_threads': UPLOAD_THREADS,
                             'upload_retries': 3}},
        conductor_opts={'conductor': {
            'max_inflight': a.conc, 'max_inflight_per_batch': a.conc,
            'item_retries': 3, 'retry_backoff': 0.5}})
    progress('starting daemons in %s' % workdir)
    try:
        cluster.start_servers()
        cluster.start_conductor('sqlite:///%s' % os.path.join(
            workdir, 'conductor.sqlite'))
        cluster.listen()
        if a.throughput:
            throughput(a, cluster, base, endpoint, workdir, children)
        if a.rss_check:
            rss_check(a, cluster, base, workdir)
    finally:
        cluster.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--conc', type=int, default=32,
                    help='conductor max_inflight = bare worker threads')
    ap.add_argument('--small-n', type=int, default=1000)
    ap.add_argument('--small-kb', type=int, default=100)
    ap.add_argument('--large-n', type=int, default=50)
    ap.add_argument('--large-mb', type=int, default=10)
    ap.add_argument('--rss-check', action='store_true')
    ap.add_argument('--rss-n', default='1000,10000',
                    type=lambda s: [int(x) for x in s.split(',')])
    ap.add_argument('--no-throughput', dest='throughput',
                    action='store_false')
    ap.add_argument('--serve-images', action='store_true',
                    help=argparse.SUPPRESS)
    ap.add_argument('--bare-worker', action='store_true',
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_images:
        return serve_images()
    if a.bare_worker:
        return bare_worker()
    # SIGTERM (e.g. timeout(1)) unwinds like Ctrl-C: daemons get stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix='bench-pipeline-') as workdir:
        children = []
        try:
            run(a, workdir, children)
        finally:
            stop(children)


if __name__ == '__main__':
    main()
