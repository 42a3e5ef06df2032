"""One file to the OSS-compatible test server: one PutObject against a
resumable multipart upload, in one run; one JSON line per size.

Chooses ``[oss] multipart_threshold``: below it a file goes up in one
request. Loopback has no per-connection bandwidth limit, so parallel
parts cannot win here; over a long fat pipe they may, for large files.

Usage: python tools/bench_oss_upload.py [--sizes-mb 10.5,20,64]
       [--part-mb 5] [--threads 4] [--rounds 3]
"""

import argparse
import json
import os
import tempfile
import time

import oss2

from rpcmq.tests.functional.fixtures import OSS, pipeline_oss

MIB = 1024 * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes-mb', default='10.5,20,64')
    ap.add_argument('--part-mb', type=float, default=5)
    ap.add_argument('--threads', type=int, default=4)
    ap.add_argument('--rounds', type=int, default=3)
    a = ap.parse_args()
    with pipeline_oss() as srv, tempfile.TemporaryDirectory() as tmp:
        bucket = oss2.Bucket(
            oss2.AuthV4(OSS['access_key_id'], OSS['access_key_secret']),
            srv.endpoint, OSS['bucket'], region=OSS['region'])
        store = oss2.ResumableStore(root=tmp)
        for size in (float(s) for s in a.sizes_mb.split(',')):
            path = os.path.join(tmp, 'file')
            with open(path, 'wb') as f:
                f.write(os.urandom(int(size * MIB)))
            best = {}
            for _ in range(a.rounds):
                for mode in ('put', 'multipart'):
                    start = time.perf_counter()
                    if mode == 'put':
                        bucket.put_object_from_file('bench-put', path)
                    else:
                        oss2.resumable_upload(
                            bucket, 'bench-multipart', path, store=store,
                            multipart_threshold=1,
                            part_size=int(a.part_mb * MIB),
                            num_threads=a.threads)
                    took = time.perf_counter() - start
                    best[mode] = min(best.get(mode, took), took)
            print(json.dumps({
                'size_mb': size, 'put_s': round(best['put'], 3),
                'multipart_s': round(best['multipart'], 3),
                'part_mb': a.part_mb, 'threads': a.threads,
                'put_to_multipart': round(best['multipart'] / best['put'],
                                          2)}), flush=True)


if __name__ == '__main__':
    main()
