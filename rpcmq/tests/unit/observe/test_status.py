"""The status port as a scraper and a load balancer meet it."""

import json
import logging
import socket
import sys
import urllib.error
import urllib.request

import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.observe import logs, trace
from rpcmq.observe.http import StatusServer


def get(server, path):
    url = 'http://%s:%d%s' % (*server.address, path)
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def health():
    return {'problem': None}


@pytest.fixture
def server(health):
    def check():
        if isinstance(health['problem'], Exception):
            raise health['problem']
        return health['problem']
    srv = StatusServer('127.0.0.1', 0, check, 'rpcmq-test').start()
    yield srv
    srv.stop()


def test_ready_only_between_start_and_shutdown(server, health):
    assert get(server, '/healthz') == (200, 'ok\n')
    assert get(server, '/readyz') == (503, 'starting\n')
    server.ready = True
    assert get(server, '/readyz') == (200, 'ok\n')
    health['problem'] = 'listener t: broker unreachable: no route'
    assert get(server, '/healthz') == (
        503, 'listener t: broker unreachable: no route\n')
    assert get(server, '/readyz')[0] == 503
    health['problem'] = None
    server.stopping = True
    assert get(server, '/healthz') == (200, 'ok\n')
    assert get(server, '/readyz') == (503, 'shutting down\n')


def test_a_failing_health_check_is_a_503_not_a_hang(server, health):
    health['problem'] = RuntimeError('database went away')
    assert get(server, '/healthz') == (
        503, 'health check failed: RuntimeError: database went away\n')


def test_other_paths_say_what_there_is(server):
    status, text = get(server, '/')
    assert status == 404 and '/metrics' in text


def test_metrics_are_prometheus_text(server):
    status, text = get(server, '/metrics')
    assert status == 200 and 'rpcmq_confirms_pending' in text
    assert '_created' not in text


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r'\[status\] cannot listen on '
                           r'127\.0\.0\.1:%d: .*choose another' % port):
            StatusServer('127.0.0.1', port, lambda: None, 'rpcmq-test')


def test_json_log_lines_carry_the_work_they_belong_to():
    record = logging.LogRecord('rpcmq.rpc.server', logging.WARNING, __file__,
                               1, 'echo: %s', ('bad',), None)
    formatter = logs.JsonFormatter()
    with logs.log_context(topic='image', correlation_id='c1'):
        with logs.log_context(method='echo', batch_id=None):
            line = formatter.format(record)
        outer = json.loads(formatter.format(record))
    entry = json.loads(line)
    assert entry['message'] == 'echo: bad' and entry['level'] == 'WARNING'
    assert entry['logger'] == 'rpcmq.rpc.server'
    assert (entry['topic'], entry['correlation_id'], entry['method']) == (
        'image', 'c1', 'echo')
    assert 'batch_id' not in entry and 'method' not in outer
    assert entry['timestamp'].endswith('+00:00')
    assert 'batch_id' not in json.loads(formatter.format(record))


def test_json_log_lines_keep_the_traceback():
    try:
        raise ValueError('boom')
    except ValueError:
        record = logging.LogRecord('x', logging.ERROR, __file__, 1, 'failed',
                                   (), sys.exc_info())
    entry = json.loads(logs.JsonFormatter().format(record))
    assert 'ValueError: boom' in entry['exception']


def test_traceparents_continue_a_trace_or_start_one():
    given = '00-%s-%s-01' % ('ab' * 16, 'cd' * 8)
    assert trace.parse(given) == ('ab' * 16, 'cd' * 8, '01')
    for bad in (None, 7, '', '01-%s-%s-01' % ('ab' * 16, 'cd' * 8),
                '00-%s-%s-01' % ('0' * 32, 'cd' * 8),
                '00-%s-%s-01' % ('AB' * 16, 'cd' * 8), given + ' '):
        assert trace.parse(bad) is None, bad
    sent = trace.outgoing({'traceparent': given})
    assert trace.parse(sent)[0] == 'ab' * 16
    assert trace.parse(sent)[1] != 'cd' * 8     # the caller's own span
    fresh = trace.outgoing({'traceparent': 'garbage'})
    assert trace.parse(fresh)[0] != 'ab' * 16 and fresh.endswith('-01')
    with trace.continued(given):
        assert trace.current() == given
        assert trace.parse(trace.outgoing({}))[0] == 'ab' * 16
        line = json.loads(logs.JsonFormatter().format(logging.LogRecord(
            'x', logging.INFO, __file__, 1, 'm', (), None)))
        assert line['trace_id'] == 'ab' * 16
    assert trace.current() is None
    with trace.continued('not a traceparent'):
        assert trace.current() is None


def test_without_opentelemetry_only_the_ids_travel(monkeypatch):
    monkeypatch.setattr(trace, 'otel', None)  # as when it is not installed
    given = '00-%s-%s-01' % ('ab' * 16, 'cd' * 8)
    with trace.sending({'traceparent': given}, 'image', 'fetch',
                       wait=True) as headers:
        sent = headers['traceparent']
    assert trace.parse(sent)[0] == 'ab' * 16 and sent != given
    with trace.handling(sent, 'image process') as own:
        assert trace.current() == own and trace.parse(own)[0] == 'ab' * 16
    with trace.handling(None, 'image process') as own:
        assert trace.parse(own)[0] != 'ab' * 16
