"""A real dashboard on memory://, with the conductor faked at its RPC
boundary only.

``FakeConductor`` is served by a real RPC server on ``[conductor] topic``
(namespace ``batch``, version 1.2) and answers ``list``, ``status``,
``cancel`` and ``retry`` with canned batches shaped as the real conductor's
replies (``reads.status``, ``schema.ItemRow.outcome``, ``db.cancel``,
``manager.retry``); it records every call it gets. The rest is real: the
Dashboard on a port of its own, its transport, its notification listener
and a file store in tmp_path.
"""

import copy
import io
import json
import re
import threading
import time
import uuid
from html.parser import HTMLParser

import httpx
import pytest
from PIL import Image

from rpcmq.conductor.errors import BatchNotFound
from rpcmq.dashboard.app import Dashboard
from rpcmq.rpc.dispatcher import expected_exceptions
from rpcmq.rpc.server import get_rpc_server
from rpcmq.storage import get_store
from rpcmq.target import Target
from rpcmq.testing.server import make_conf
from rpcmq.transport import get_transport

TOKEN = 'unit-dashboard-token-7c1e9a'
PAGE_SIZE = 3
THUMBNAIL_SIZE = 32
STATES = ('pending', 'running', 'done', 'failed', 'cancelled')
T0 = 1_700_000_000.0
#: The largest offset the conductor's database (SQLite) takes; past it,
#: the real conductor fails with OverflowError.
MAX_SQL_INT = 2 ** 63 - 1


def item(idx, state, url=None, key=None, error=None, result=None,
         attempts=1):
    """One item outcome, as ``ItemRow.outcome()`` gives it."""
    url = url or 'https://images.example/%d.jpg' % idx
    if result is None and state == 'done':
        result = {'key': key or 'img/%d.jpg' % idx, 'size': 1234,
                  'etag': '%032x' % idx, 'url': 'file:///store/%d' % idx,
                  'server': 'demo-1', 'content_type': 'image/jpeg'}
    if error is None and state == 'failed':
        error = {'type': 'DownloadFailed', 'message': 'HTTP 404 from %s'
                 % url}
    return {'idx': idx, 'url': url, 'key': key, 'name': None,
            'state': state, 'attempts': attempts, 'error': error,
            'result': result}


def batch(batch_id, states=(), items=None, created_at=T0, **fields):
    """A batch summary as ``reads.status`` gives it, with its ``items``
    (kept by the fake, sent only when asked for)."""
    items = items if items is not None else [
        item(idx, state) for idx, state in enumerate(states)]
    totals = {s: sum(i['state'] == s for i in items) for s in STATES}
    totals['total'] = len(items)
    if totals['pending'] or totals['running']:
        state = 'running'
    else:
        state = 'done_with_failures' if totals['failed'] else 'done'
    summary = {'batch_id': batch_id, 'state': state,
               'created_at': created_at, 'updated_at': created_at + 60,
               'options': {}, 'start_notified': True,
               'end_notified': state != 'running', 'totals': totals,
               'items': items}
    summary.update(fields)
    return summary


class FakeConductor:
    """The conductor's ``batch`` endpoint over canned batches."""

    target = Target(namespace='batch', version='1.2')

    def __init__(self):
        self.batches = {}  # batch_id -> summary with items, newest first
        self.calls = []    # (method, {argument: value}) as received
        self._lock = threading.Lock()

    def add(self, *summaries):
        with self._lock:
            for summary in summaries:
                self.batches[summary['batch_id']] = summary

    def update(self, batch_id, **fields):
        with self._lock:
            self.batches[batch_id].update(fields)

    def called(self, method):
        """The arguments of each call of ``method``, in order."""
        with self._lock:
            return [args for name, args in self.calls if name == method]

    def _record(self, method, **args):
        with self._lock:
            self.calls.append((method, args))

    @staticmethod
    def _offset(offset):
        if offset > MAX_SQL_INT:  # what sqlite3 raises in the real one
            raise OverflowError('Python int too large to convert to SQLite '
                                'INTEGER')
        return offset

    def _find(self, batch_id):
        with self._lock:
            if batch_id not in self.batches:
                raise BatchNotFound(batch_id=batch_id)
            return copy.deepcopy(self.batches[batch_id])

    def list(self, ctxt, limit=50, state=None, offset=0):
        self._record('list', limit=limit, state=state, offset=offset)
        self._offset(offset)
        with self._lock:
            found = [copy.deepcopy(b) for b in self.batches.values()
                     if state is None or b['state'] == state]
        for summary in found:
            del summary['items']
        return found[offset:offset + limit]

    @expected_exceptions(BatchNotFound)
    def status(self, ctxt, batch_id, items=False, offset=0, limit=1000,
               states=None):
        self._record('status', batch_id=batch_id, items=items,
                     offset=offset, limit=limit, states=states)
        summary = self._find(batch_id)
        outcomes = summary.pop('items')
        if items:
            self._offset(offset)
            chosen = [i for i in outcomes
                      if states is None or i['state'] in states]
            summary['items'] = chosen[offset:offset + limit]
            summary['offset'] = offset
        return summary

    @expected_exceptions(BatchNotFound)
    def cancel(self, ctxt, batch_id):
        self._record('cancel', batch_id=batch_id)
        totals = self._find(batch_id)['totals']
        totals['cancelled'] += totals.pop('pending')
        totals['pending'] = 0
        return totals

    @expected_exceptions(BatchNotFound)
    def retry(self, ctxt, batch_id):
        self._record('retry', batch_id=batch_id)
        return {'batch_id': batch_id,
                'retried': self._find(batch_id)['totals']['failed']}


@pytest.fixture
def conf(tmp_path):
    return make_conf(**{
        'conductor.topic': 'conductor_%s' % uuid.uuid4().hex[:12],
        'store': 'file', 'file_store.root': str(tmp_path / 'store'),
        'rpc_response_timeout': 30, 'dashboard.page_size': PAGE_SIZE,
        'dashboard.thumbnail_size': THUMBNAIL_SIZE})


@pytest.fixture
def transport(conf):
    transport = get_transport(conf)
    yield transport
    transport.cleanup()


@pytest.fixture
def conductor(conf, transport):
    """The fake conductor, answering on ``[conductor] topic``."""
    fake = FakeConductor()
    server = get_rpc_server(transport, Target(
        topic=conf.conductor.topic, server='fake-conductor'), [fake])
    assert server.start(), 'the fake conductor is not consuming'
    yield fake
    server.stop()
    server.wait(10)


@pytest.fixture
def store(conf):
    """The file store the dashboard reads thumbnails from."""
    return get_store(conf)


@pytest.fixture
def open_dashboard(conf, transport):
    """``open_dashboard(token='', store=None)``: a started Dashboard and
    an httpx client of it; both are stopped after the test."""
    started = []

    def open_(token='', store=None):
        conf.set_override('auth_token', token, group='dashboard')
        dash = Dashboard(conf, transport, store=store, host='127.0.0.1',
                         port=0).start()
        client = httpx.Client(base_url=dash.url, timeout=30)
        started.append((dash, client))
        return dash, client
    yield open_
    for dash, client in started:
        client.close()
        dash.stop()


@pytest.fixture
def web(open_dashboard, conductor):
    """A client of a dashboard without auth_token, conductor running."""
    return open_dashboard()[1]


def put_image(store, key, fmt='JPEG', size=(400, 300), mode='RGB'):
    """Store a real image of ``size`` under ``key``; return its bytes."""
    img = Image.new(mode, size, (200, 40, 40, 128)[:len(mode)])
    out = io.BytesIO()
    img.save(out, fmt)
    store.put_bytes(key, out.getvalue())
    return out.getvalue()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self._href, self._text = [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == 'a':
            self._href, self._text = dict(attrs).get('href'), []

    def handle_data(self, data):
        self._text.append(data)

    def handle_endtag(self, tag):
        if tag == 'a' and self._href is not None:
            self.links.append((''.join(self._text).strip(), self._href))
            self._href = None


def links(html):
    """``[(text, href)]`` of the page's links, entities decoded."""
    parser = _Links()
    parser.feed(html)
    return parser.links


def link(html, text):
    """The href of the link whose text starts with ``text``, or None."""
    return next((href for label, href in links(html)
                 if label.startswith(text)), None)


def item_rows(html):
    return [int(i) for i in re.findall(r'<tr data-idx="(\d+)"', html)]


def csrf_of(html):
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    return found.group(1) if found else None


def sign_in(client, token=TOKEN):
    reply = client.post('/login', data={'token': token, 'next': '/'})
    assert reply.status_code == 303, reply.text
    return reply


class EventStream:
    """``GET path`` as server-sent events, read with a deadline:
    ``next()`` is the next ``(event, data)``, None once the stream ends."""

    def __init__(self, client, path, deadline=60.0):
        self._request = client.stream('GET', path, timeout=httpx.Timeout(
            30.0))
        self._deadline = time.monotonic() + deadline

    def __enter__(self):
        self.response = self._request.__enter__()
        self._lines = self.response.iter_lines()
        return self

    def __exit__(self, *exc_info):
        return self._request.__exit__(*exc_info)

    def next(self):
        event = None
        for line in self._lines:
            assert time.monotonic() < self._deadline, 'the stream lingers'
            if line.startswith('event: '):
                event = line[len('event: '):]
            elif line.startswith('data: '):
                return event, json.loads(line[len('data: '):])
        return None
