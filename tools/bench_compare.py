"""Run rpcmq's RPC benchmark beside the anchors, in one run, and print
ratios (these machines are noisy: only same-run ratios mean anything).

    python tools/bench_compare.py --oslo-python /tmp/anchor-oslo/bin/python \
        [--anchors ../shared/bench] [--n 2000] [--rounds 2] \
        [--baseline PYTHON:TREE]

Runs, alternating per round: rpcmq (eventlet and threading servers; its
request queues quorum and classic, ``--queue-types``),
oslo.messaging (same executors) and the raw-kombu floor; with
``--oslo-compat`` also oslo.messaging's client against rpcmq's server
(``bench_rpc.py --oslo-client``) and a backlog of its casts run by either
server (``bench_backlog.py``); with ``--baseline PYTHON:TREE`` also
another rpcmq (an older commit: ``git archive REV | tar x -C TREE``,
installed in PYTHON's venv with ``pip install TREE``) by that tree's own
``tools/bench_rpc.py``, classic queues, so that the code before a change
is measured in the same run as the code after it. Prints every JSON
line as it comes, then one JSON line per scenario with the best of the
rounds for each system and rpcmq's ratio to oslo.messaging, and the
ratios of each round (rpcmq and oslo.messaging run one after the other
in a round, so each round's ratio is a pair taken at nearly the same
moment of a noisy machine) with their median.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
METRIC = {'call_seq': 'calls_per_s', 'call_conc': 'calls_per_s',
          'cast': 'casts_per_s', 'call_window': 'calls_per_s',
          'cast_backlog': 'casts_per_s'}


def run(cmd, cwd=None, system=None):
    """The JSON lines ``cmd`` printed (printed here too), their ``sys``
    set to ``system`` if given."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         timeout=900)
    lines = []
    for line in out.stdout.splitlines():
        if line.startswith('{'):
            fields = json.loads(line)
            if system:
                fields['sys'] = system
            print(json.dumps(fields), flush=True)
            lines.append(fields)
    if out.returncode:
        sys.stderr.write(out.stderr[-2000:])
    return lines


def baseline_command(spec, n):
    """The command that runs the benchmark of the tree in ``spec``
    (``PYTHON:TREE``), less its executor; classic queues (trees from
    before ``--queue-type`` know no others)."""
    python, sep, tree = spec.partition(':')
    script = os.path.join(tree, 'tools', 'bench_rpc.py')
    if not sep or not os.path.isfile(script) or not shutil.which(python):
        sys.exit('--baseline wants PYTHON:TREE, PYTHON an interpreter '
                 'and TREE a source tree with tools/bench_rpc.py; got %r'
                 % spec)
    command = [python, script, '--n', str(n)]
    with open(script) as f:
        if '--queue-type' in f.read():
            command += ['--queue-type', 'classic']
    return command


def round_ratios(by_round, scenario, executor, system, other, rounds):
    """``system`` over ``other`` in each round both ran (the two run one
    after the other in a round), and the median of those ratios (None if
    there are none)."""
    ratios = []
    for rnd in range(rounds):
        x = by_round.get((scenario, system, executor, rnd))
        y = by_round.get((scenario, other, executor, rnd))
        if x and y:
            ratios.append(round(x / y, 2))
    return ratios, round(statistics.median(ratios), 2) if ratios else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--oslo-python', required=True)
    ap.add_argument('--anchors', default=os.path.join(
        HERE, '..', '..', 'shared', 'bench'))
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--signed', action='store_true',
                    help='also run rpcmq with signed requests each round '
                         'and print the cost of signing')
    ap.add_argument('--queue-types', default='quorum,classic',
                    help='rpcmq request queue types to run (comma-separated;'
                         ' oslo.messaging declares classic queues)')
    ap.add_argument('--oslo-compat', action='store_true',
                    help='also run oslo.messaging\'s client against an '
                         'rpcmq server with oslo_compat, each round')
    ap.add_argument('--baseline', metavar='PYTHON:TREE',
                    help='also run the rpcmq of source tree TREE (installed '
                         'for PYTHON) each round, as "baseline"')
    a = ap.parse_args()
    baseline = baseline_command(a.baseline, a.n) if a.baseline else None
    queue_types = [t for t in a.queue_types.split(',') if t]
    n = str(a.n)
    results = []
    for rnd in range(a.rounds):
        first = len(results)
        for executor in ('eventlet', 'threading'):
            for queue_type in queue_types:
                ours = [sys.executable, os.path.join(HERE, 'bench_rpc.py'),
                        '--n', n, '--executor', executor, '--queue-type',
                        queue_type]
                results += run(ours)
                if a.signed and queue_type == queue_types[0]:
                    results += run(ours + ['--signed'])
            if baseline:
                results += run(baseline + ['--executor', executor],
                               system='baseline')
            results += run([a.oslo_python, 'oslo_rpc_bench.py', '--n', n,
                            '--executor', executor], cwd=a.anchors)
            if a.oslo_compat:
                results += run([sys.executable,
                                os.path.join(HERE, 'bench_rpc.py'), '--n', n,
                                '--executor', executor, '--oslo-client',
                                a.oslo_python])
                results += run([sys.executable,
                                os.path.join(HERE, 'bench_backlog.py'),
                                '--executor', executor, '--oslo-python',
                                a.oslo_python])
        results += run([a.oslo_python, 'kombu_limit_bench.py', '--n', n,
                        '--window', '16'], cwd=a.anchors)
        for r in results[first:]:
            r['round'] = rnd
    best, by_round = {}, {}
    for r in results:
        system = r['sys'] + ('+signed' if r.get('signed') else '')
        if r['sys'] == 'rpcmq' and not r.get('signed'):
            system += ':' + r['queue_type']
        key = (r['scenario'], system, r.get('executor'))
        value = r[METRIC[r['scenario']]]
        best[key] = max(best.get(key, 0), value)
        by_round[key + (r['round'],)] = value
    for scenario in ('call_seq', 'call_conc', 'cast', 'cast_backlog'):
        for executor in ('eventlet', 'threading'):
            oslo = best.get((scenario, 'oslo.messaging', executor))
            raw = best.get((scenario, 'kombu-raw', None)) or best.get(
                ('call_window', 'kombu-raw', None)
                if scenario == 'call_conc' else (None,))
            for queue_type in queue_types:
                ours = best.get((scenario, 'rpcmq:' + queue_type, executor))
                if scenario == 'cast_backlog':
                    break  # oslo.messaging's casts only
                ratios, median = round_ratios(
                    by_round, scenario, executor, 'rpcmq:' + queue_type,
                    'oslo.messaging', a.rounds)
                print(json.dumps({
                    'summary': scenario, 'executor': executor,
                    'queue_type': queue_type, 'rpcmq': ours,
                    'oslo.messaging': oslo, 'kombu-raw': raw,
                    'ratio_to_oslo': round(ours / oslo, 2) if ours and oslo
                    else None, 'round_ratios': ratios,
                    'median_round_ratio': median}), flush=True)
            old = best.get((scenario, 'baseline', executor))
            if old and oslo and scenario != 'cast_backlog':
                ours = best.get((scenario, 'rpcmq:classic', executor))
                ratios, median = round_ratios(
                    by_round, scenario, executor, 'rpcmq:classic', 'baseline',
                    a.rounds)
                print(json.dumps({
                    'summary': scenario + '_baseline', 'executor': executor,
                    'baseline': old, 'baseline_ratio_to_oslo':
                    round(old / oslo, 2), 'rpcmq:classic': ours,
                    'round_ratios_to_baseline': ratios,
                    'median_ratio_to_baseline': median}), flush=True)
            served = best.get((scenario, 'rpcmq-oslo-compat', executor))
            if served and oslo:
                print(json.dumps({
                    'summary': scenario + '_oslo_client', 'executor': executor,
                    'rpcmq server': served, 'oslo.messaging server': oslo,
                    'ratio_to_oslo': round(served / oslo, 2)}), flush=True)
            ours = best.get((scenario, 'rpcmq:' + queue_types[0], executor))
            signed = best.get((scenario, 'rpcmq+signed', executor))
            if signed and ours:
                print(json.dumps({
                    'summary': scenario + '_signed', 'executor': executor,
                    'rpcmq': ours, 'rpcmq+signed': signed,
                    'signed_to_unsigned': round(signed / ours, 3)}),
                    flush=True)


if __name__ == '__main__':
    main()
