"""The rpcmq command as a user runs it."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from rpcmq.cmd import cli
from rpcmq.cmd.progress import print_report


def run(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, '-m', 'rpcmq.cmd.cli', *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_demo_runs_a_real_batch_into_the_file_store(tmp_path):
    store = tmp_path / 'store'
    proc = run('demo', '--count', '30', '--dir', str(store))
    assert proc.returncode == 0, proc.stderr
    files = [p for p in store.rglob('*') if p.is_file()]
    assert len(files) == 28  # 2 of the 30 are deliberately bad
    assert 'stored 28 images under %s' % store in proc.stderr.replace(
        '\n', ' ')
    assert 'DownloadFailed' in proc.stderr or '404' in proc.stderr


def test_items_file_formats(tmp_path):
    lines = tmp_path / 'urls.txt'
    lines.write_text('# images\nhttp://a/1.jpg\n\nhttp://a/2.png\n')
    assert cli.read_items(str(lines)) == [{'url': 'http://a/1.jpg'},
                                          {'url': 'http://a/2.png'}]
    items = tmp_path / 'items.json'
    items.write_text(json.dumps(['http://a/1.jpg',
                                 {'url': 'http://a/2.png', 'key': 'k'}]))
    assert cli.read_items(str(items))[1] == {'url': 'http://a/2.png',
                                             'key': 'k'}


def test_key_value_arguments_parse_json_when_they_can():
    assert cli.parse_kv(['x=1', 'y=abc', 'z={"a": [1]}']) == {
        'x': 1, 'y': 'abc', 'z': {'a': [1]}}
    with pytest.raises(ValueError):
        cli.parse_kv(['novalue'])


@pytest.mark.parametrize('args, message', [
    (['batch', 'submit', '/no/such/file'], 'No such file'),
    (['call', 'diag', 'ping', 'oops'], "'oops' is not key=value"),
])
def test_user_errors_print_one_line_and_fail(args, message):
    proc = run(*args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_items_file_is_one_clear_line(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('[{"url": ')
    proc = run('batch', 'submit', str(bad))
    assert proc.returncode == 1
    assert 'not valid JSON' in proc.stderr and 'Traceback' not in proc.stderr


def test_unreachable_broker_is_one_clear_line(tmp_path):
    conf = tmp_path / 'rpcmq.conf'
    conf.write_text('[DEFAULT]\ntransport_url = '
                    'rabbit://guest:guest@127.0.0.1:1/\n'
                    '[rabbit]\nrabbit_retry_interval = 0.1\n')
    proc = run('--config-file', str(conf), '--timeout', '2', 'batch',
               'status', 'abc')
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert '127.0.0.1:1' in proc.stderr or 'no connection' in proc.stderr


def test_keygen_prints_an_entry_signing_keys_accepts(capsys):
    from rpcmq.cmd import cli
    from rpcmq.security.signing import Key
    assert cli.main(['keygen', 'bridge']) == 0
    entry = capsys.readouterr().out.strip()
    key = Key.parse(entry)
    assert key.key_id == 'bridge' and len(key.secret) >= 32
    assert cli.main(['keygen', 'a:b']) == 1


def test_a_file_is_checked_here_with_line_numbers_before_anything_is_sent(
        tmp_path):
    urls = tmp_path / 'urls.txt'
    urls.write_text('# header\nhttp://a.test/1.jpg\nftp://a.test/2.jpg\n'
                    'not a url\n\nhttp://a.test/1.jpg\n')
    # No broker is configured: had anything been sent, this would hang or
    # fail on the transport, not on the file.
    proc = run('batch', 'submit', str(urls))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "%s line 3: 'ftp://a.test/2.jpg': not an http(s) URL with a " \
           "host" % urls in lines
    assert "%s line 4: 'not a url': not an http(s) URL with a host" % urls \
        in lines
    assert '%s line 6: http://a.test/1.jpg repeats line 2' % urls in lines
    assert lines[-1] == ('rpcmq: error: 3 problems in %s; nothing was '
                         'submitted' % urls)


def test_problems_name_json_items_by_index():
    items = [{'url': 'http://a/1.jpg', 'key': 'k'}, 'oops',
             {'url': 'http://a/2.jpg', 'key': 'k'}]
    assert cli.problems(items, ['item 0', 'item 1', 'item 2']) == [
        ('item 1', 'is not a URL or {"url", "key"?, "name"?}'),
        ('item 2', "key 'k' repeats item 0")]


def test_call_takes_key_value_arguments_after_its_options():
    """The README's form: ``call image fetch --namespace image url=...``
    (argparse alone refused the pair after the option)."""
    args = cli.parse_args(['call', 'image', 'fetch', '--namespace', 'image',
                           'url=https://example.com/a.jpg', '--server', 's1',
                           'name=a'])
    assert (args.topic, args.method, args.namespace, args.server) == (
        'image', 'fetch', 'image', 's1')
    assert args.args == ['url=https://example.com/a.jpg', 'name=a']


def test_unknown_options_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(['call', 'image', 'fetch', '--nope'])
    assert exited.value.code == 2
    assert 'unrecognized arguments: --nope' in capsys.readouterr().err


def test_a_file_not_in_utf8_is_named_with_its_line(tmp_path):
    urls = tmp_path / 'urls.txt'
    urls.write_bytes(b'http://a/1.jpg\n# ok\nhttp://a/\xff2.jpg\n')
    proc = run('batch', 'submit', str(urls))
    assert proc.returncode == 1
    assert proc.stderr == ('rpcmq: error: %s, line 3: byte 0xff is not '
                           'UTF-8; save the file as UTF-8 (URLs with other '
                           'characters percent-encoded)\n' % urls)


def test_the_failure_report_prints_bracketed_text_as_it_is():
    """rich took '[image]' in a server's message for markup and dropped
    it: 'list the network in  allowed_networks'."""
    console = Console(file=io.StringIO(), width=200)
    print_report({'batch_id': 'b[1]', 'state': 'done', 'elapsed': 1.0,
                  'totals': {'total': 1, 'done': 0, 'failed': 1,
                             'cancelled': 0},
                  'items': [{'state': 'failed', 'idx': 0,
                             'url': 'http://10.0.0.1/[x].jpg',
                             'error': {'message': 'private address; list '
                                       'the network in [image] '
                                       'allowed_networks'}}]}, console)
    text = console.file.getvalue()
    assert 'list the network in [image] allowed_networks' in text
    assert 'http://10.0.0.1/[x].jpg' in text and 'b[1]' in text


def test_without_a_broker_the_cli_says_so_at_once(tmp_path):
    """No --config-file and none in the default places: transport_url is
    memory://, which nothing in another process can answer on. It used
    to wait out the whole timeout for a reply that could not come."""
    conf = tmp_path / 'empty.conf'
    conf.write_text('[DEFAULT]\n')
    for args in (['batch', 'list'], ['--config-file', str(conf), 'call',
                                     'image', 'ping']):
        proc = subprocess.run(
            [sys.executable, '-m', 'rpcmq.cmd.cli', '--timeout', '60',
             *args], capture_output=True, text=True, timeout=30,
            cwd=tmp_path, env={'HOME': str(tmp_path), 'PATH': '/usr/bin'})
        assert proc.returncode == 2, proc.stderr
        assert 'no broker: transport_url is memory://' in proc.stderr
        assert 'give --config-file with [DEFAULT] transport_url' in \
            proc.stderr


def test_the_demo_leaves_only_what_it_was_asked_to_keep(tmp_path):
    """Each demo run left a /tmp/rpcmq-demo-* directory (spool, database,
    images) behind, with --dir too."""
    temp = tmp_path / 'tmp'
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))
    proc = run('demo', '--count', '12', env=env)
    assert proc.returncode == 0, proc.stderr
    assert 'stored 10 images in a temporary directory, removed at the end' in \
        proc.stderr.replace('\n', ' ')
    store = tmp_path / 'kept'
    proc = run('demo', '--count', '12', '--dir', str(store), env=env)
    assert proc.returncode == 0, proc.stderr
    assert len([p for p in store.rglob('*') if p.is_file()]) == 10
    assert list(temp.iterdir()) == []


def test_ctrl_c_stops_the_demo_at_once_and_leaves_nothing(tmp_path):
    """Ctrl-C during a long demo used to hang (the bar frozen, 48 idle
    threads for 30 s and more); a second Ctrl-C printed "Exception ignored
    in: <module 'threading'>"."""
    temp = tmp_path / 'tmp'
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rpcmq.cmd.cli', 'demo', '--count', '1500'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Interrupt it in full flight: 100 images stored.
        deadline = time.monotonic() + 120
        while sum(1 for p in temp.glob('rpcmq-demo-*/store/**/*')
                  if p.is_file()) < 100:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert 'rpcmq demo: interrupted' in err, err
    assert 'Traceback' not in err and 'Exception ignored' not in err, err
    assert list(temp.iterdir()) == []
