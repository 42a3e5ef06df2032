"""The dashboard's pages and actions (Starlette endpoints).

Pages render server-side with Jinja2, autoescaped: URLs, keys and error
texts come from whoever submitted a batch and from remote servers, so
they are always text, never markup. The one script (static/dashboard.js)
writes only with ``textContent``; the Content-Security-Policy allows no
inline script at all.
"""

import asyncio
import json
import time
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.responses import (
    RedirectResponse,
    Response,
    StreamingResponse,
)

from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.manager import MAX_OFFSET
from rpcmq.conductor.schema import ACTIVE, ITEM_STATES, OPEN, SHOWN_STATES
from rpcmq.dashboard.auth import COOKIE, safe_next
from rpcmq.dashboard.thumbs import NoPreview

__all__ = ['ERRORS', 'error_page', 'progress']

#: Least time between two status calls of one live page, in seconds.
STATUS_EVERY = 0.5
#: A live page asks for the totals at least this often anyway.
RESYNC = 5.0



def _int(value, default, low=0, high=MAX_OFFSET):
    """An integer from the URL, within ``low`` .. ``high`` (past every
    batch: a page there is empty, as the conductor answers it)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return min(high, max(low, number))


def progress(status):
    """What the progress bar and counters of a batch show."""
    totals = status['totals']
    finished = totals['done'] + totals['failed'] + totals['cancelled']
    # A cancelled batch may still have items running: it ends with them.
    ended = status['state'] not in (OPEN,) + ACTIVE and \
        not totals['running']
    span = max((status['updated_at'] if ended else time.time())
               - status['created_at'], 1e-6)
    return {'batch_id': status['batch_id'], 'state': status['state'],
            'totals': totals, 'finished': finished,
            'percent': round(100.0 * finished / totals['total'], 1)
            if totals['total'] else 100.0,
            'rate': round(finished / span, 1), 'ended': ended,
            'created_at': status['created_at'],
            'ended_at': status['updated_at'] if ended else None}


def _page(request, template, status_code=200, **context):
    dash = request.app.state.dash
    csrf = dash.guard.csrf_for(request)  # '' unless a session is signed in
    context.update(request=request, csrf=csrf, actions=dash.guard.enabled,
                   signed_in=bool(csrf))
    return dash.templates.TemplateResponse(
        request, template, context, status_code=status_code)


def error_page(request, status_code, title, message):
    return _page(request, 'error.html', status_code=status_code,
                 title=title, message=message)


async def batches(request):
    dash = request.app.state.dash
    q = request.query_params
    limit = dash.page_size
    offset = _int(q.get('offset'), 0)
    state = q.get('state') or None
    if state is not None and state not in SHOWN_STATES:
        return error_page(request, 400, 'No such state', 'state must be '
                          'one of %s' % ', '.join(SHOWN_STATES))
    rows = await run_in_threadpool(dash.backend.batches, offset, limit,
                                   state)
    return _page(request, 'batches.html', batches=[progress(r) for r in rows],
                 offset=offset, limit=limit, state=state,
                 states=SHOWN_STATES, more=len(rows) == limit)


async def batch(request):
    dash = request.app.state.dash
    batch_id = request.path_params['batch_id']
    q = request.query_params
    limit = dash.page_size
    offset = _int(q.get('offset'), 0)
    state = q.get('state') or None
    if state is not None and state not in ITEM_STATES:
        return error_page(request, 400, 'No such item state',
                          'state must be one of %s' % ', '.join(ITEM_STATES))
    status = await run_in_threadpool(
        dash.backend.batch, batch_id, offset, limit,
        None if state is None else [state])
    shown = status['totals']['total'] if state is None else \
        status['totals'][state]
    context = dict(batch=progress(status), items=status['items'],
                   offset=offset, limit=limit, state=state,
                   states=ITEM_STATES, shown=shown,
                   more=offset + len(status['items']) < shown,
                   notice=q.get('notice'))
    if q.get('fragment') == 'items':
        return _page(request, '_items.html', **context)
    return _page(request, 'batch.html', **context)


def _items(n):
    return 'item' if n == 1 else 'items'


def _sse(event, data):
    return 'event: %s\ndata: %s\n\n' % (event, json.dumps(data))


async def batch_events(request):
    """Server-sent events: ``progress`` (totals), ``item`` (one finished
    item) and, once, ``end``."""
    dash = request.app.state.dash
    batch_id = request.path_params['batch_id']
    totals = dash.backend.totals
    status = await run_in_threadpool(totals, batch_id)  # 404 before 200
    queue = dash.backend.live.subscribe(batch_id)

    async def stream(status):
        try:
            while True:
                shown = progress(status)
                yield _sse('progress', shown)
                if shown['ended'] and status['end_notified']:
                    yield _sse('end', shown)
                    return
                events = await _next_events(queue)
                for event_type, payload in events[:200]:
                    if event_type == 'batch.item':
                        yield _sse('item', {k: payload.get(k) for k in (
                            'idx', 'state', 'attempts', 'error')})
                await asyncio.sleep(STATUS_EVERY)  # at most 2 calls/s
                status = await run_in_threadpool(totals, batch_id)
        finally:
            dash.backend.live.unsubscribe(batch_id, queue)

    return StreamingResponse(stream(status), media_type='text/event-stream',
                             headers={'Cache-Control': 'no-cache',
                                      'X-Accel-Buffering': 'no'})


async def _next_events(queue):
    """The next event and those already waiting behind it; [] after
    RESYNC seconds without one."""
    try:
        events = [await asyncio.wait_for(queue.get(), RESYNC)]
    except asyncio.TimeoutError:
        return []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def thumbnail(request):
    dash = request.app.state.dash
    batch_id = request.path_params['batch_id']
    idx = request.path_params['idx']
    item = None if idx > MAX_OFFSET else await run_in_threadpool(
        dash.backend.item, batch_id, idx)
    result = (item or {}).get('result') or {}
    key = result.get('key') if item and item['state'] == 'done' else None
    if not isinstance(key, str):
        return Response('item %d of batch %s has no stored image\n'
                        % (idx, batch_id), 404, media_type='text/plain')
    thumbs = dash.backend.thumbs
    try:
        signed = await run_in_threadpool(thumbs.signed_url, key)
        if signed:
            return RedirectResponse(signed, 302)
        body, ctype = await run_in_threadpool(thumbs.render, key,
                                              result.get('etag'))
    except NoPreview as exc:
        return Response('no preview: %s\n' % exc, 404,
                        media_type='text/plain')
    return Response(body, media_type=ctype,
                    headers={'Cache-Control': 'private, max-age=3600'})


async def _act(request, verb):
    dash = request.app.state.dash
    batch_id = request.path_params['batch_id']
    form = await request.form()
    refused = dash.guard.may_act(request, form)
    if refused:
        return error_page(request, 403, 'Not allowed', refused)
    result = await run_in_threadpool(getattr(dash.backend, verb), batch_id)
    if verb == 'retry':
        notice = '%d failed %s queued again' % (
            result['retried'], _items(result['retried']))
    else:
        notice = 'cancelled: %d %s will not run; %d running finish' % (
            result['cancelled'], _items(result['cancelled']),
            result['running'])
    return RedirectResponse('%s?%s' % (
        request.url_for('batch', batch_id=batch_id).path,
        urlencode({'notice': notice})), 303)


async def cancel(request):
    return await _act(request, 'cancel')


async def retry(request):
    return await _act(request, 'retry')


async def servers(request):
    dash = request.app.state.dash
    seen = await run_in_threadpool(dash.backend.servers)
    return _page(request, 'servers.html', **seen)


async def dead(request):
    dash = request.app.state.dash
    topic = request.path_params['topic']
    letters = await run_in_threadpool(dash.backend.dead, topic)
    return _page(request, 'dead.html', topic=topic, letters=letters)


async def login(request):
    dash = request.app.state.dash
    target = safe_next(request.query_params.get('next'))
    if request.method == 'GET':
        if not dash.guard.enabled:
            return RedirectResponse(target, 303)
        return _page(request, 'login.html', next=target, wrong=False)
    form = await request.form()
    target = safe_next(form.get('next'))
    if not dash.guard.token_matches(form.get('token')):
        await asyncio.sleep(0.5)  # one guess per half second per request
        return _page(request, 'login.html', status_code=401, next=target,
                     wrong=True)
    response = RedirectResponse(target, 303)
    response.set_cookie(COOKIE, dash.guard.new_session(), httponly=True,
                        samesite='strict',
                        secure=request.url.scheme == 'https')
    return response


async def logout(request):
    response = RedirectResponse('/login', 303)
    response.delete_cookie(COOKIE)
    return response


def not_found(request, exc):
    if isinstance(exc, BatchNotFound):
        return error_page(request, 404, 'No such batch', str(exc))
    return error_page(request, 400, 'Invalid request', str(exc))


ERRORS = {BatchNotFound: not_found, InvalidBatch: not_found}
