"""Benchmark the batch pipeline; prints one JSON line per measurement.

What moves: images from a local image server process to a local
OSS-compatible server process (``rpcmq.testing.ossserver``, V4 signatures;
the store is OSS, not the file store). Two systems do the same work:

  pipeline  one batch submitted with ConductorAPI to an ``rpcmq-conductor``
            daemon, which drives two ``rpcmq-server`` daemons (one
            image.transfer per item) over RabbitMQ; timed from submit to the
            ``batch.end`` notification; ``max_inflight`` and
            ``max_inflight_per_batch`` = ``--conc``
  bare      a worker process runs ``--conc`` threads, each doing a
            requests download to a temporary file and an oss2 upload (one
            PutObject, or a resumable multipart upload from 64 MiB on, as
            the oss store does); no broker, no database

Scenarios: ``small`` (``--small-n`` x ``--small-kb`` KiB JPEGs) and
``large`` (``--large-n`` x ``--large-mb`` MiB PNGs). Lines give items/s,
MB/s (10^6 bytes), the pipeline's ratio to bare and the peak RSS (VmHWM,
reset before each scenario) of every daemon and of the bare worker.
``--rounds N`` runs each scenario N times (the pipeline, then each bare
loop; even rounds the other way round) and ends with a summary line per
scenario: the medians, their ratio and each round's ratio (runs on
shared machines vary by 10-20% from one round to the next).

``--rss-check`` runs ``--rss-n`` (default 1000,10000) tiny items, each
batch on a fresh conductor with a fresh SQLite database, and reports the
conductor's RSS after its ``batch.end`` and its peak, to show whether the
conductor's memory grows with the batch size.

``--scale 10000,100000`` runs batches of tiny items of those sizes (each
on a fresh conductor and database, submitted in chunks) and reports
submit time, items/s, conductor CPU per item and peak RSS, ``batch
status`` latency sampled during the run and the database size. With
``--scale-db postgres --conductors 2`` the database is a new PostgreSQL
database (on ``--postgres-url``'s server) shared by that many conductors.

Usage: python tools/bench_pipeline.py [--url rabbit://...] [--conc 32]
       [--small-n 1000] [--small-kb 100] [--large-n 50] [--large-mb 10]
       [--bare-conc 2,16] [--rounds 3] [--rss-check [--rss-n 1000,10000]]
       [--scale N,N... [--scale-db sqlite|postgres] [--conductors N]]
       [--no-throughput]
"""

import argparse
import json
import os
import pathlib
import signal
import statistics
import sys
import time

from rpcmq.tests.functional.fixtures import OSS, Cluster

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from bench_pair import broker_pid  # noqa: E402

STORE = 'oss (rpcmq.testing.ossserver, V4 auth, child process)'


def bare_bucket(endpoint):
    """The bare worker's bucket (V4 signatures, as the daemons' store)."""
    import oss2
    auth = oss2.AuthV4(OSS['access_key_id'], OSS['access_key_secret'])
    return oss2.Bucket(auth, endpoint, OSS['bucket'], region=OSS['region'],
                       enable_crc=True)


# -- the pipeline -------------------------------------------------------

def run_batch(cluster, urls, timeout):
    """Submit ``urls`` as one batch; return its timing, bytes and the
    daemons' peak RSS (MiB)."""
    pids = dict({h: d.proc.pid for h, d in cluster.servers.items()},
                conductor=cluster.conductor.proc.pid)
    cpu = {}
    for name, pid in pids.items():
        benchlib.reset_peak(pid)
        cpu[name] = benchlib.cpu_seconds(pid)
    started = time.perf_counter()
    batch_id = cluster.submit([{'url': u} for u in urls])
    end = cluster.wait_end(batch_id, timeout=timeout)
    elapsed = time.perf_counter() - started
    mem = cluster.memory()
    cpu_raw = {name: benchlib.cpu_seconds(pid) - cpu[name]
               for name, pid in pids.items()}
    cpu = {name: round(seconds, 1) for name, seconds in cpu_raw.items()}
    items = outcomes(cluster, batch_id, end)
    done = [i for i in items if i['state'] == 'done']
    if len(done) != len(urls):
        failed = [i for i in items if i['state'] != 'done'][:3]
        raise SystemExit('batch %s: %d of %d items done; e.g. %s'
                         % (batch_id, len(done), len(urls), failed))
    return {'elapsed': elapsed, 'bytes': sum(i['result']['size']
                                             for i in done),
            'cpu_s': cpu, 'cpu_raw': cpu_raw,
            'rss_peak_mb': {k: round(v['VmHWM'], 1) for k, v in mem.items()},
            'rss_mb': {k: round(v['VmRSS'], 1) for k, v in mem.items()}}


def outcomes(cluster, batch_id, end):
    """Every item outcome of a batch: its ``batch.end`` has them all unless
    the batch was too large for one message (``items_complete`` false);
    then page through ``status``."""
    if end.get('items_complete', True):
        return end['items']
    items = []
    while True:
        page = cluster.api.status(batch_id, items=True, offset=len(items),
                                  limit=1000)['items']
        if not page:
            return items
        items.extend(page)


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
    scenarios = [('small', a.small_n, a.small_kb),
                 ('large', a.large_n, a.large_mb * 1024)]
    urls = {s: benchlib.image_urls(base, s, n, kb) for s, n, kb in scenarios}
    progress('warming the image cache')
    benchlib.warm_image_cache([u for s in urls.values() for u in s], a.conc)
    progress('warming the bare worker and the pipeline')
    warmup = benchlib.image_urls(base, 'warm', a.conc * 2, 50)
    # The helpers both systems share, and the broker (beam.smp, when one).
    shared = {'image_server': children[0][0].pid,
              'oss_server': children[1][0].pid}
    broker = broker_pid()
    if broker:
        shared['broker'] = broker
    bares = {}
    for conc in a.bare_conc or [a.conc]:
        bares[conc] = benchlib.start_bare_worker(
            os.path.abspath(__file__), children, workdir, endpoint, conc,
            [(u, 'bare%d/warm/%d' % (conc, i))
             for i, u in enumerate(warmup)])
    run_batch(cluster, warmup, timeout=120)
    seen = {s: {'pipeline': [], 'conductor_ms': [], **{
        conc: [] for conc in bares}} for s, _, _ in scenarios}
    for rnd in range(1, a.rounds + 1):
        for scenario, n, kb in scenarios:
            one_round(a, cluster, bares, urls, seen[scenario], rnd, shared,
                      {'scenario': scenario, 'items': n, 'item_kb': kb,
                       'store': STORE})
    for scenario, _, _ in scenarios:
        summary(a, scenario, seen[scenario], bares)


def one_round(a, cluster, bares, urls, seen, rnd, shared, common):
    """The pipeline and each bare loop on one scenario's URLs; odd rounds
    start with the pipeline, even ones with the bare loops, so that
    neither always runs right after the other's writes. Each line also
    has ``shared_cpu_s``: the CPU seconds the image server, the
    OSS-compatible server and the broker spent meanwhile."""
    scenario, n = common['scenario'], common['items']
    results = {}

    def pipeline():
        progress('%s: pipeline, %d items (round %d)' % (scenario, n, rnd))
        before = cpu_of(shared)
        p = run_batch(cluster, urls[scenario], timeout=1800)
        used = cpu_used(shared, before)
        results['pipeline'] = pr = rate(n, p)
        conductor_ms = p['cpu_raw']['conductor'] * 1e3 / n
        seen['pipeline'].append(pr['items_per_s'])
        seen['conductor_ms'].append(conductor_ms)
        emit(system='pipeline', conc=a.conc, round=rnd, **common, **pr,
             cpu_s=p['cpu_s'], shared_cpu_s=used,
             rss_peak_mb=p['rss_peak_mb'],
             conductor_cpu_ms_per_item=round(conductor_ms, 2))

    def bare(conc):
        progress('%s: bare, %d threads (round %d)' % (scenario, conc, rnd))
        before = cpu_of(shared)
        b = benchlib.ask(bares[conc], [
            (u, 'bare%d/%s/%d' % (conc, scenario, i))
            for i, u in enumerate(urls[scenario])])
        used = cpu_used(shared, before)
        results[conc] = br = rate(n, b)
        seen[conc].append(br['items_per_s'])
        emit(system='bare', conc=conc, round=rnd, **common, **br,
             cpu_s={'bare_worker': round(b['cpu'], 1)}, shared_cpu_s=used,
             cpu_ms_per_item=round(b['cpu'] * 1e3 / n, 2),
             rss_peak_mb={'bare_worker': round(b['hwm'], 1)})

    steps = [pipeline] + [lambda c=conc: bare(c) for conc in bares]
    for step in (steps if rnd % 2 else steps[::-1]):
        step()
    pr = results['pipeline']
    best = max(bares, key=lambda conc: results[conc]['items_per_s'])
    emit(scenario=scenario, round=rnd, best_bare_conc=best,
         ratio_pipeline_to_best_bare=round(
             pr['items_per_s'] / results[best]['items_per_s'], 3),
         mb_ratio_pipeline_to_best_bare=round(
             pr['mb_per_s'] / results[best]['mb_per_s'], 3))


def cpu_of(pids):
    return {name: benchlib.cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(pids, before):
    after = cpu_of(pids)
    return {name: round(after[name] - before[name], 2) for name in pids}


def summary(a, scenario, seen, bares):
    """Medians over the rounds: the pipeline against the bare loop whose
    median is best (with one round, the round itself)."""
    median = statistics.median
    best = max(bares, key=lambda conc: median(seen[conc]))
    emit(scenario=scenario, summary=True, rounds=a.rounds,
         pipeline_items_per_s=round(median(seen['pipeline']), 2),
         bare_items_per_s={conc: round(median(seen[conc]), 2)
                           for conc in bares},
         best_bare_conc=best,
         ratio_of_medians=round(
             median(seen['pipeline']) / median(seen[best]), 3),
         round_ratios=[round(p / max(seen[c][i] for c in bares), 3)
                       for i, p in enumerate(seen['pipeline'])],
         conductor_cpu_ms_per_item=round(median(seen['conductor_ms']), 3))


def rss_check(a, cluster, base, workdir):
    for n in a.rss_n:
        cluster.stop_conductor()
        cluster.start_conductor('sqlite:///%s' % os.path.join(
            workdir, 'rss-%d.sqlite' % n))
        before = benchlib.proc_memory(cluster.conductor.proc.pid)['VmRSS']
        progress('rss: %d items' % n)
        r = run_batch(cluster, benchlib.image_urls(base, 'rss%d' % n, n, 0),
                      timeout=3600)
        emit(scenario='rss', items=n, conc=a.conc, **rate(n, r),
             conductor_rss_start_mb=round(before, 1),
             conductor_rss_after_mb=r['rss_mb']['conductor'],
             conductor_rss_peak_mb=r['rss_peak_mb']['conductor'],
             cpu_s=r['cpu_s'],
             server_rss_peak_mb={k: v for k, v in r['rss_peak_mb'].items()
                                 if k != 'conductor'})


class StatusSampler:
    """``batch status`` every 0.25 s in a thread; latency percentiles."""

    def __init__(self, api, batch_id):
        import threading
        self.api, self.batch_id = api, batch_id
        self.latencies = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.25):
            started = time.perf_counter()
            self.api.status(self.batch_id)
            self.latencies.append(time.perf_counter() - started)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        lat = sorted(self.latencies)
        if not lat:
            return {'samples': 0}
        return {'p50': round(lat[len(lat) // 2] * 1e3, 2),
                'p99': round(lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                             * 1e3, 2),
                'samples': len(lat)}


def fresh_database(a, workdir, n):
    """A new, empty conductor database for one scale run: ``(url, size)``,
    ``size()`` giving its size in MB."""
    if a.scale_db == 'sqlite':
        db = os.path.join(workdir, 'scale-%d.sqlite' % n)
        return 'sqlite:///%s' % db, lambda: sum(
            os.path.getsize(p) for p in (db, db + '-wal')
            if os.path.exists(p)) / 1e6
    import sqlalchemy as sa

    from rpcmq.conductor.engine import make_engine
    name = 'rpcmq_bench_scale_%d' % n
    admin = make_engine(sa.make_url(a.postgres_url))[0].execution_options(
        isolation_level='AUTOCOMMIT')
    with admin.connect() as conn:
        conn.exec_driver_sql('DROP DATABASE IF EXISTS %s' % name)
        conn.exec_driver_sql('CREATE DATABASE %s' % name)

    def size():
        with admin.connect() as conn:
            return conn.exec_driver_sql(
                'SELECT pg_database_size(%s)', (name,)).scalar() / 1e6
    url = sa.make_url(a.postgres_url).set(database=name)
    return url.render_as_string(hide_password=False), size


def scale(a, cluster, base, workdir):
    """Tiny items at growing batch sizes, each batch on fresh conductors
    (``--conductors``) and a fresh database (``--scale-db``): submit time
    (in chunks), items/s, conductor CPU per item (all conductors), peak
    RSS (the largest), ``batch status`` latency sampled while the batch
    runs, and the database's size."""
    for n in a.scale:
        cluster.stop_conductor()
        cluster.stop_peers()
        url, db_size = fresh_database(a, workdir, n)
        cluster.start_conductor(url, executor=a.conductor_executor)
        pids = [cluster.conductor.proc.pid] + [
            cluster.start_peer('p%d-%d' % (n, i), url).proc.pid
            for i in range(1, a.conductors)]
        for pid in pids:
            benchlib.reset_peak(pid)
        cpu0 = sum(benchlib.cpu_seconds(pid) for pid in pids)
        urls = benchlib.image_urls(base, 'scale%d' % n, n, 0)
        progress('scale: %d items' % n)
        started = time.perf_counter()
        batch_id = cluster.api.submit_chunked([{'url': u} for u in urls])
        cluster.submitted.add(batch_id)
        submitted = time.perf_counter() - started
        sampler = StatusSampler(cluster.api, batch_id)
        end = cluster.wait_end(batch_id, timeout=max(7200, n // 50))
        elapsed = time.perf_counter() - started
        status_ms = sampler.stop()
        cpu = sum(benchlib.cpu_seconds(pid) for pid in pids) - cpu0
        emit(scenario='scale', items=n, conc=a.conc,
             done=end['totals']['done'],
             submit_s=round(submitted, 2), seconds=round(elapsed, 2),
             items_per_s=round(n / elapsed, 1),
             conductor_cpu_ms_per_item=round(cpu * 1e3 / n, 3),
             conductor_rss_peak_mb=round(max(
                 benchlib.proc_memory(pid)['VmHWM'] for pid in pids), 1),
             status_ms=status_ms, executor=a.conductor_executor,
             db=a.scale_db, conductors=a.conductors,
             db_mb=round(db_size(), 1))


def run(a, workdir, children):
    me = os.path.abspath(__file__)
    base = benchlib.start_image_server(me, children)
    endpoint = benchlib.start_oss(
        children, os.path.join(workdir, 'oss'), OSS['bucket'],
        OSS['access_key_id'], OSS['access_key_secret'], OSS['region'])
    cluster = Cluster(
        pathlib.Path(workdir), a.url, endpoint,
        server_opts={'DEFAULT': {'executor_thread_pool_size':
                                 max(64, a.conc)},
                     'image': {'download_retries': 3},
                     'oss': {'multipart_threshold': benchlib.THRESHOLD,
                             'part_size': benchlib.PART_SIZE,
                             'upload_threads': benchlib.UPLOAD_THREADS,
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
        if a.scale:
            scale(a, cluster, base, workdir)
    finally:
        cluster.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.add_args(ap, conc=32, large_n=50, large_mb=10,
                      conc_help='conductor max_inflight = bare worker threads')
    ap.add_argument('--rounds', type=int, default=1,
                    help='rounds of each scenario (the pipeline, then each '
                         'bare loop); the summary line has the medians')
    ap.add_argument('--rss-check', action='store_true')
    ap.add_argument('--rss-n', default='1000,10000',
                    type=lambda s: [int(x) for x in s.split(',')])
    ap.add_argument('--no-throughput', dest='throughput',
                    action='store_false')
    ap.add_argument('--conductor-executor', default='eventlet',
                    choices=['eventlet', 'threading'],
                    help='the conductor\'s executor in --scale runs')
    ap.add_argument('--bare-conc', default=[],
                    type=lambda s: [int(x) for x in s.split(',')],
                    help='thread counts of the bare loop (requests then '
                         'oss2, the design rpcmq replaces), e.g. 2,16; the '
                         'best of them is the ratio\'s reference '
                         '(default: --conc)'),
    ap.add_argument('--scale', default=[],
                    type=lambda s: [int(x) for x in s.split(',')],
                    help='batch sizes of tiny items to run, e.g. '
                         '10000,100000,1000000')
    ap.add_argument('--scale-db', default='sqlite',
                    choices=['sqlite', 'postgres'],
                    help='the conductors\' database in --scale runs')
    ap.add_argument('--postgres-url',
                    default='postgresql://postgres@127.0.0.1:5432/postgres',
                    help='a PostgreSQL server where --scale-db postgres '
                         'may create databases')
    ap.add_argument('--conductors', type=int, default=1,
                    help='conductors sharing the database in --scale runs '
                         '(more than 1 needs --scale-db postgres)')
    a = ap.parse_args()
    if a.conductors > 1 and a.scale_db != 'postgres':
        ap.error('--conductors %d needs --scale-db postgres (SQLite takes '
                 'one conductor)' % a.conductors)
    if benchlib.run_helper(a, bare_bucket):
        return
    # SIGTERM (e.g. timeout(1)) unwinds like Ctrl-C: daemons get stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    benchlib.run_in_workdir('bench-pipeline-', lambda workdir, children:
                            run(a, workdir, children))


if __name__ == '__main__':
    main()
