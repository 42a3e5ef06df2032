"""An operator watches running daemons through ``[status] port``: the
metrics move during a real batch, ``/healthz`` says when the broker is
gone and when it is back, and JSON logs name the work they are about."""

import json
import socket
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rpcmq.observe import trace
from rpcmq.testing.cleanup import delete_entities
from rpcmq.testing.imageserver import ImageServer
from rpcmq.testing.proxy import TcpProxy
from rpcmq.tests.functional.conftest import RABBIT_URL, require
from rpcmq.tests.functional.daemons import Daemon, write_config
from rpcmq.tests.functional.fixtures import (
    Cluster,
    pipeline_oss,
    wait_until,
)
from rpcmq.tests.scenarios.rpc import Env

GIVEN = '00-%s-%s-01' % ('5e' * 16, '7a' * 8)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get(port, path):
    """(HTTP status, body text) of GET ``path`` on the status port."""
    url = 'http://127.0.0.1:%d%s' % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port):
    """{(name, frozenset(labels)): value} of every sample on /metrics,
    read with prometheus_client's own parser."""
    status, text = get(port, '/metrics')
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def cluster(tmp_path):
    require('rabbit')
    ports = {'server': free_port(), 'conductor': free_port()}
    with pipeline_oss() as oss, ImageServer() as images:
        cluster = Cluster(
            tmp_path, RABBIT_URL, oss.endpoint, hosts=('img-watched',),
            server_opts={'status': {'port': ports['server']},
                         'DEFAULT': {'log_format': 'json'}},
            conductor_opts={'status': {'port': ports['conductor']},
                            'DEFAULT': {'log_format': 'json'}})
        cluster.ports, cluster.images = ports, images
        try:
            cluster.start_servers()
            cluster.listen()
            cluster.start_conductor('sqlite:///%s' % (tmp_path / 'c.sqlite'))
            yield cluster
        finally:
            codes = cluster.close()
    assert set(codes.values()) <= {0, None}, (codes, cluster.logs())


def test_the_metrics_move_while_a_batch_runs(cluster):
    server, conductor = cluster.ports['server'], cluster.ports['conductor']
    for port in (server, conductor):
        assert get(port, '/healthz') == (200, 'ok\n')
        assert get(port, '/readyz') == (200, 'ok\n')
    images = cluster.images
    urls = [images.url('/img/watched-%d.png?kb=8' % i) for i in range(10)]
    # Two that take a while, so a scrape sees the batch running.
    urls += [images.url('/slow/watched-slow-%d.jpg?delay=0.1&chunks=30' % i)
             for i in range(2)]
    urls.append(images.url('/status/404'))
    batch_id = cluster.submit([{'url': u} for u in urls],
                              ctxt={'traceparent': GIVEN})
    during = wait_until(lambda: (lambda f: f if value(
        f, 'rpcmq_conductor_items', state='running') > 0 else None)(
        samples(conductor)), what='a scrape with items running')
    assert value(during, 'rpcmq_conductor_batches', state='running') == 1
    assert wait_until(lambda: value(samples(server), 'rpcmq_executor_busy',
                                    topic=cluster.image_topic) > 0,
                      what='a busy image server')
    end = cluster.wait_end(batch_id)
    assert end['totals']['done'] == 12 and end['totals']['failed'] == 1

    found = samples(server)
    topic = cluster.image_topic
    assert value(found, 'rpcmq_requests_total', topic=topic,
                 method='transfer', kind='call', outcome='ok') == 12
    assert value(found, 'rpcmq_requests_total', topic=topic,
                 method='transfer', kind='call', outcome='error') == 1
    assert value(found, 'rpcmq_request_seconds_count', topic=topic,
                 method='transfer') == 13
    assert value(found, 'rpcmq_image_bytes_total',
                 direction='downloaded') > 12 * 1024
    assert value(found, 'rpcmq_image_bytes_total', direction='stored') == \
        value(found, 'rpcmq_image_bytes_total', direction='downloaded')
    assert value(found, 'rpcmq_image_failures_total',
                 type='DownloadFailed') == 1
    assert value(found, 'rpcmq_executor_size', topic=topic) == 64
    assert value(found, 'rpcmq_executor_busy', topic=topic) == 0
    assert value(found, 'process_resident_memory_bytes') > 0

    found = samples(conductor)
    assert value(found, 'rpcmq_conductor_items_finished_total',
                 state='done') == 12
    assert value(found, 'rpcmq_conductor_items_finished_total',
                 state='failed') == 1
    assert value(found, 'rpcmq_conductor_item_seconds_count') == 13
    assert value(found, 'rpcmq_conductor_items', state='done') == 12
    assert value(found, 'rpcmq_conductor_items', state='pending') == 0
    assert value(found, 'rpcmq_conductor_batches', state='done') == 1
    assert value(found, 'rpcmq_conductor_events_unsent') == 0
    assert value(found, 'rpcmq_client_call_seconds_count',
                 topic=topic, method='transfer', outcome='ok') == 12

    # JSON log lines parse one by one and name the batch and item, and
    # the submit's trace reaches the item and the image server's call.
    def entries(name):
        log = next(cluster.workdir.glob(name + '-*.log')).read_text()
        return [json.loads(line) for line in log.splitlines() if line]
    failed = [e for e in entries('conductor')
              if 'attempt 1 failed' in e['message']]
    assert failed and failed[0]['batch_id'] == batch_id
    assert failed[0]['item'] == 12 and failed[0]['level'] == 'INFO'
    assert {'timestamp', 'logger', 'pid'} <= set(failed[0])
    assert failed[0]['trace_id'] == '5e' * 16
    refused = [e for e in entries('img-watched')
               if '/status/404' in e['message']]
    assert refused and refused[0]['trace_id'] == '5e' * 16
    assert refused[0]['method'] == 'transfer'
    assert refused[0]['topic'] == cluster.image_topic


def test_healthz_says_when_the_broker_is_gone_and_when_it_is_back(tmp_path):
    require('rabbit')
    port = free_port()
    with TcpProxy('127.0.0.1', 5672) as proxy:
        topic = 'watched_%s' % uuid.uuid4().hex[:8]
        conf = write_config(tmp_path / 'server.conf', {
            'DEFAULT': {'transport_url': 'rabbit://guest:guest@127.0.0.1:'
                                         '%d/' % proxy.port,
                        'endpoints': 'diag', 'topic': topic,
                        'host': 'watched-1', 'graceful_shutdown_timeout': 5},
            'rabbit': {'rabbit_retry_interval': 0.2,
                       'rabbit_retry_backoff': 0.2},
            'status': {'port': port}})
        daemon = Daemon('rpcmq-server', conf, tmp_path / 'server.log')
        daemon.start()
        try:
            daemon.wait_for_log('rpcmq-server started', timeout=60)
            assert get(port, '/healthz') == (200, 'ok\n')
            proxy.cut()
            status, why = wait_until(
                lambda: (lambda r: r if r[0] == 503 else None)(
                    get(port, '/healthz')), what='503 after the cut')
            assert 'broker unreachable' in why or 'not consuming' in why, why
            assert get(port, '/readyz')[0] == 503
            before = samples(port)
            proxy.restore()
            wait_until(lambda: get(port, '/healthz') == (200, 'ok\n'),
                       timeout=60, what='200 after the restore')
            after = samples(port)
            name = 'listener %s' % topic
            assert value(after, 'rpcmq_reconnects_total', consumer=name) > \
                value(before, 'rpcmq_reconnects_total', consumer=name)
            assert daemon.terminate() == 0
        finally:
            daemon.stop()
            delete_entities(RABBIT_URL, [topic, topic + '.watched-1'])


def test_a_traceparent_travels_from_the_caller_to_the_endpoint():
    require('rabbit')
    seen = []

    class Traced:
        def where(self, ctxt):
            seen.append(ctxt.get('traceparent'))
            return trace.current()

    env = Env(RABBIT_URL)
    try:
        env.serve([Traced()])
        client = env.client()
        under = client.call({'traceparent': GIVEN}, 'where')
        assert seen == [GIVEN]  # the caller's, in the endpoint's context
        # The server works on the caller's trace, under the call's span.
        assert trace.parse(under)[0] == '5e' * 16 and under != GIVEN
        # Without one, each call starts a trace the endpoint sees too.
        fresh = client.call({}, 'where')
        assert seen[1] == fresh and trace.parse(fresh)[0] != '5e' * 16
        client.cast({'traceparent': GIVEN}, 'where')
        wait_until(lambda: len(seen) == 3, what='the cast')
        assert seen[2] == GIVEN
    finally:
        env.close()


def test_with_opentelemetry_every_hop_is_a_span():
    """A program with a tracer provider sees its own span, the call under
    it and the server's handling under the call, on one trace."""
    require('rabbit')
    from opentelemetry import trace as otel
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.set_tracer_provider(provider)  # once per process
    seen = []

    class Traced:
        def where(self, ctxt):
            seen.append(ctxt['traceparent'])

    env = Env(RABBIT_URL)
    try:
        env.serve([Traced()])
        with otel.get_tracer('app').start_as_current_span('app work') as app:
            env.client().call({}, 'where')
        wait_until(lambda: len(exporter.get_finished_spans()) == 3,
                   what='three spans')
        spans = {s.name: s for s in exporter.get_finished_spans()}
        client = spans['%s where' % env.topic]
        server = spans['%s process' % env.topic]
        assert client.kind == otel.SpanKind.CLIENT
        assert server.kind == otel.SpanKind.SERVER
        assert client.parent.span_id == app.get_span_context().span_id
        assert server.parent.span_id == client.context.span_id
        assert server.context.trace_id == app.get_span_context().trace_id
        assert client.attributes['rpc.method'] == 'where'
        # The endpoint's context names the server's span.
        assert trace.parse(seen[0])[1] == '%016x' % server.context.span_id
    finally:
        env.close()
        provider.shutdown()  # later tests record nothing


@pytest.mark.parametrize('program, section, reachable, unreachable, why', [
    ('rpcmq-bridge-redis', 'redis_bridge', {'url': 'redis://127.0.0.1:6379/0'},
     {'url': 'redis://127.0.0.1:%d/0'}, 'redis unreachable'),
    ('rpcmq-bridge-mqtt', 'mqtt_bridge', {'port': 1883}, {'port': '%d'},
     'MQTT broker 127.0.0.1:%d not connected'),
])
def test_a_bridge_says_when_its_producers_side_is_gone(
        tmp_path, program, section, reachable, unreachable, why):
    require('rabbit')
    closed = free_port()  # nothing listens there
    ns = 'obs%s' % uuid.uuid4().hex[:8]
    daemons = []
    try:
        for name, values in (('up', reachable), ('down', {
                k: v % closed if '%' in str(v) else v
                for k, v in unreachable.items()})):
            port = free_port()
            conf = write_config(tmp_path / ('%s.conf' % name), {
                'DEFAULT': {'transport_url': RABBIT_URL,
                            'graceful_shutdown_timeout': 3},
                section: dict(values, pool='%s-%s' % (ns, name),
                              tasks_list='%s:%s' % (ns, name),
                              topics='%s/%s' % (ns, name),
                              client_id='%s-%s' % (ns, name)),
                'status': {'port': port}})
            daemon = Daemon(program, conf, tmp_path / ('%s.log' % name))
            daemon.port = port
            daemons.append(daemon.start())
        up, down = daemons
        for daemon in daemons:
            daemon.wait_for_log('%s started' % program, timeout=60)
        assert wait_until(lambda: get(up.port, '/healthz') == (200, 'ok\n'),
                          what='the bridge with its producers up')
        status, text = get(down.port, '/healthz')
        assert status == 503 and (why % closed if '%' in why else why) in \
            text, text
        for daemon in daemons:
            assert daemon.terminate() == 0
    finally:
        for daemon in daemons:
            daemon.stop()
        delete_entities(RABBIT_URL, ['%s-up' % ns, '%s-down' % ns])
