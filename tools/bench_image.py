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
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

KEY_ID, SECRET, BUCKET = 'bench-key', 'bench-secret', 'bench'


def bare_bucket(endpoint):
    """The bare worker's bucket (V1 signatures, as the daemon's store)."""
    import oss2
    return oss2.Bucket(oss2.Auth(KEY_ID, SECRET), endpoint, BUCKET,
                       enable_crc=True)


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
                   oss_endpoint, BUCKET, KEY_ID, SECRET, benchlib.THRESHOLD,
                   benchlib.PART_SIZE, benchlib.UPLOAD_THREADS,
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
    def transfer(job):
        return client.call({}, 'transfer', url=job[0], key=job[1])['size']

    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        return benchlib.measure(pid, lambda: list(pool.map(transfer, jobs)))


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
    benchlib.add_args(ap, conc=16, large_n=20, large_mb=20)
    a = ap.parse_args()
    if benchlib.run_helper(a, bare_bucket):
        return
    benchlib.run_in_workdir('bench-image-', lambda workdir, children:
                            run(a, workdir, children))


def run(a, workdir, children):
    me = os.path.abspath(__file__)
    base = benchlib.start_image_server(me, children)
    endpoint = benchlib.start_oss(children, os.path.join(workdir, 'oss'),
                                  BUCKET, KEY_ID, SECRET)
    topic = 'bench_image_%s' % uuid.uuid4().hex[:8]
    daemon = start_daemon(a, topic, workdir, endpoint)
    children.append((daemon, signal.SIGTERM))

    scenarios = [('small', a.small_n, a.small_kb, 'jpg'),
                 ('large', a.large_n, a.large_mb * 1024, 'png')]
    urls = {s: benchlib.image_urls(base, s, n, kb, ext)
            for s, n, kb, ext in scenarios}
    benchlib.warm_image_cache([u for s in urls.values() for u in s],
                              a.conc)
    warmup = ['%s/img/warm%d.jpg?kb=50' % (base, i) for i in range(a.conc)]
    bare = benchlib.start_bare_worker(
        me, children, workdir, endpoint, a.conc,
        [(u, 'warm/bare/%d' % i) for i, u in enumerate(warmup)])
    transport, client = rpcmq_client(a, topic)
    with concurrent.futures.ThreadPoolExecutor(a.conc) as pool:
        list(pool.map(lambda u: client.call({}, 'transfer', url=u), warmup))
    for scenario, n, _kb, _ext in scenarios:
        jobs = {s: [(u, 'bench/%s/%s/%d' % (s, scenario, i))
                    for i, u in enumerate(urls[scenario])]
                for s in ('bare', 'rpcmq')}
        b = benchlib.ask(bare, jobs['bare'])
        r = run_rpcmq(client, daemon.pid, jobs['rpcmq'], a.conc)
        emit('bare', scenario, n, b)
        emit('rpcmq', scenario, n, r,
             ratio=(n / r['elapsed']) / (n / b['elapsed']))
    transport.cleanup()


if __name__ == '__main__':
    main()
