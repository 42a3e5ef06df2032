"""Benchmark image transfer; one JSON line per (system, scenario).

Both systems move the same images from one local image server process to
one local OSS-compatible server process (``rpcmq.testing.ossserver``):

  rpcmq  this process runs ``--conc`` caller threads that call ``transfer``
         on ONE ``rpcmq-server`` (eventlet, ``store = oss``) over the broker
  bare   a worker process runs ``--conc`` threads, each doing a requests
         download to a temporary file and an oss2 upload (one PutObject,
         or a resumable multipart upload from ``multipart_threshold`` on,
         as the oss store does); no broker

Scenarios: ``small`` (``--small-n`` x ``--small-kb`` KiB JPEGs) and
``large`` (``--large-n`` x ``--large-mb`` MiB PNGs). Each line gives files/s,
MB/s (10^6 bytes), rpcmq's ratio to bare, and the peak RSS of the process
doing the work (the daemon; the bare worker) with its growth over the RSS
it had before the scenario (VmHWM is reset between scenarios), and its
CPU time per file.

Usage: python tools/bench_image.py [--url rabbit://...] [--conc 16]
       [--small-n 1000] [--small-kb 100] [--large-n 20] [--large-mb 20]
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
import uuid

KEY_ID, SECRET, BUCKET = 'bench-key', 'bench-secret', 'bench'
MIB = 1024 * 1024
THRESHOLD, PART_SIZE, UPLOAD_THREADS = 10 * MIB, 5 * MIB, 4


def image_urls(base, scenario, n, kb):
    """Distinct URLs; a few distinct bodies for large files so the image
    server's cache (256 MiB) keeps them all."""
    ext = 'jpg' if scenario == 'small' else 'png'
    bodies = max(1, min(n, int(128 * 1024 // kb)))
    return ['%s/img/%s%d.%s?kb=%d&n=%d' % (base, scenario, i % bodies, ext,
                                           kb, i) for i in range(n)]


def proc_status(pid):
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    with open('/proc/%s/status' % pid) as f:
        for line in f:
            name, _, value = line.partition(':')
            if name in ('VmRSS', 'VmHWM'):
                out[name] = int(value.split()[0]) / 1024.0
    return out


def cpu_seconds(pid):
    """User + system CPU time of ``pid`` (all its threads)."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rpartition(')')[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def reset_peak(pid):
    with open('/proc/%s/clear_refs' % pid, 'w') as f:
        f.write('5')  # resets VmHWM to the current RSS


# -- helper processes ------------------------------------------------------

def serve_images():
    from rpcmq.testing.imageserver import ImageServer
    with ImageServer() as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def spawn(args, **kwargs):
    proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, **kwargs)
    return proc, proc.stdout.readline().strip()


def bare_worker(a):
    """Run in a child process: transfer every URL on stdin; report JSON."""
    import oss2
    import requests
    spec = json.loads(sys.stdin.readline())
    auth = oss2.Auth(KEY_ID, SECRET)
    local = threading.local()
    spool = spec['spool']

    def bucket():
        if not hasattr(local, 'bucket'):
            local.bucket = oss2.Bucket(auth, spec['endpoint'], BUCKET,
                                       enable_crc=True)
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
        print(json.dumps(proc_status('self')), flush=True)
        while True:
            line = sys.stdin.readline()
            if not line:
                return
            jobs = json.loads(line)
            reset_peak('self')
            before = proc_status('self')['VmRSS']
            cpu = cpu_seconds('self')
            started = time.perf_counter()
            sizes = list(pool.map(transfer, jobs))
            elapsed = time.perf_counter() - started
            print(json.dumps({'elapsed': elapsed, 'bytes': sum(sizes),
                              'rss_before': before,
                              'cpu': cpu_seconds('self') - cpu,
                              'hwm': proc_status('self')['VmHWM']}),
                  flush=True)


# -- the benchmark ---------------------------------------------------------

def start_daemon(a, topic, workdir, oss_endpoint):
    conf = os.path.join(workdir, 'bench.conf')
    with open(conf, 'w') as f:
        f.write('[DEFAULT]\ntransport_url = %s\nendpoints = image\n'
                'topic = %s\nhost = bench\nexecutor = eventlet\n'
                'log_level = WARNING\nstore = oss\n'
                '[image]\nallowed_networks = 127.0.0.1/32\nspool_dir = %s\n'
                '[oss]\nendpoint = %s\nbucket = %s\naccess_key_id = %s\n'
                'access_key_secret = %s\nauth_version = v1\n'
                'multipart_threshold = %d\npart_size = %d\n'
                'upload_threads = %d\ncheckpoint_dir = %s\n'
                % (a.url, topic, os.path.join(workdir, 'spool'),
                   oss_endpoint, BUCKET, KEY_ID, SECRET, THRESHOLD,
                   PART_SIZE, UPLOAD_THREADS,
                   os.path.join(workdir, 'ckpt')))
    exe = os.path.join(os.path.dirname(sys.executable), 'rpcmq-server')
    return subprocess.Popen([exe, '--config-file', conf])


def rpcmq_client(a, topic):
    import rpcmq
    from rpcmq.testing.server import make_conf
    transport = rpcmq.get_transport(make_conf(), url=a.url)
    client = rpcmq.RPCClient(transport, rpcmq.Target(
        topic=topic, namespace='image', version='1.0'), timeout=600)
    deadline = time.monotonic() + 30
    while True:  # the server is up once it answers
        try:
            client.prepare(timeout=1).call({}, 'transfer', url='bad:')
        except rpcmq.MessagingTimeout:
            if time.monotonic() > deadline:
                raise
        except Exception:  # BadURL: it answered
            return transport, client


def run_rpcmq(client, pid, jobs, conc):
    reset_peak(pid)
    before = proc_status(pid)['VmRSS']
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        sizes = list(pool.map(lambda job: client.call(
            {}, 'transfer', url=job[0], key=job[1])['size'], jobs))
    return {'elapsed': time.perf_counter() - started, 'bytes': sum(sizes),
            'rss_before': before, 'cpu': cpu_seconds(pid) - cpu,
            'hwm': proc_status(pid)['VmHWM']}


def warm_image_cache(urls, conc):
    import requests
    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        list(pool.map(lambda u: requests.get(u, timeout=300).content,
                      urls))


def emit(system, scenario, n, r, ratio=None):
    line = {'sys': system, 'scenario': scenario, 'files': n,
            'files_per_s': round(n / r['elapsed'], 2),
            'mb_per_s': round(r['bytes'] / r['elapsed'] / 1e6, 2)}
    if ratio is not None:
        line['ratio_to_bare'] = round(ratio, 3)
    line['server_rss_peak_mb'] = round(r['hwm'], 1)
    line['server_rss_growth_mb'] = round(r['hwm'] - r['rss_before'], 1)
    line['server_cpu_ms_per_file'] = round(r['cpu'] / n * 1e3, 2)
    print(json.dumps(line), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--conc', type=int, default=16)
    ap.add_argument('--small-n', type=int, default=1000)
    ap.add_argument('--small-kb', type=int, default=100)
    ap.add_argument('--large-n', type=int, default=20)
    ap.add_argument('--large-mb', type=int, default=20)
    ap.add_argument('--serve-images', action='store_true',
                    help=argparse.SUPPRESS)
    ap.add_argument('--bare-worker', action='store_true',
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_images:
        return serve_images()
    if a.bare_worker:
        return bare_worker(a)
    with tempfile.TemporaryDirectory(prefix='bench-image-') as workdir:
        children = []
        try:
            run(a, workdir, children)
        finally:
            stop(children)


def stop(children):
    """Stop helpers: close stdin (image server, bare worker), SIGINT (OSS
    server), SIGTERM (daemon); then wait."""
    for proc, how in reversed(children):
        if proc.poll() is not None:
            continue
        if how == 'stdin':
            proc.stdin.close()
        else:
            proc.send_signal(how)
    for proc, _how in children:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(a, workdir, children):
    me = [sys.executable, os.path.abspath(__file__)]
    images, base = spawn(me + ['--serve-images'])
    children.append((images, 'stdin'))
    oss_root = os.path.join(workdir, 'oss')
    os.mkdir(oss_root)
    oss, banner = spawn([sys.executable, '-m', 'rpcmq.testing.ossserver',
                         '--bucket', BUCKET, '--root', oss_root,
                         '--credentials', '%s:%s' % (KEY_ID, SECRET)])
    children.append((oss, signal.SIGINT))
    endpoint = banner.split(' on ', 1)[1].split(',', 1)[0]
    topic = 'bench_image_%s' % uuid.uuid4().hex[:8]
    daemon = start_daemon(a, topic, workdir, endpoint)
    children.append((daemon, signal.SIGTERM))
    bare_spool = os.path.join(workdir, 'bare')
    os.mkdir(bare_spool)
    bare = subprocess.Popen(me + ['--bare-worker'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    children.append((bare, 'stdin'))

    scenarios = [('small', a.small_n, a.small_kb),
                 ('large', a.large_n, a.large_mb * 1024)]
    urls = {s: image_urls(base, s, n, kb) for s, n, kb in scenarios}
    warm_image_cache([u for s in urls.values() for u in s], a.conc)
    warmup = ['%s/img/warm%d.jpg?kb=50' % (base, i) for i in range(a.conc)]
    bare.stdin.write(json.dumps({
        'endpoint': endpoint, 'conc': a.conc, 'spool': bare_spool,
        'warmup': [(u, 'warm/bare/%d' % i) for i, u in enumerate(warmup)]})
        + '\n')
    bare.stdin.flush()
    json.loads(bare.stdout.readline())  # warmed up
    transport, client = rpcmq_client(a, topic)
    with concurrent.futures.ThreadPoolExecutor(a.conc) as pool:
        list(pool.map(lambda u: client.call({}, 'transfer', url=u), warmup))
    for scenario, n, _kb in scenarios:
        jobs = {s: [(u, 'bench/%s/%s/%d' % (s, scenario, i))
                    for i, u in enumerate(urls[scenario])]
                for s in ('bare', 'rpcmq')}
        bare.stdin.write(json.dumps(jobs['bare']) + '\n')
        bare.stdin.flush()
        b = json.loads(bare.stdout.readline())
        r = run_rpcmq(client, daemon.pid, jobs['rpcmq'], a.conc)
        emit('bare', scenario, n, b)
        emit('rpcmq', scenario, n, r,
             ratio=(n / r['elapsed']) / (n / b['elapsed']))
    transport.cleanup()


if __name__ == '__main__':
    main()
