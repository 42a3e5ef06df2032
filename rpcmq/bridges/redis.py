"""Redis list bridge: batch download tasks pushed by a PHP (or any) app.

Producers ``LPUSH batch_download_tasks '{"task_id": "t1", "task_info":
[{"fn": "a", "url": "https://..."}]}'`` and wait with ``BRPOP`` on
``batch_download_resp_t1`` for ``start``, the ``fn`` of each stored item,
then ``end`` — the protocol of the asyncio downloader this replaces.

Reliable queue: ``BLMOVE tasks processing RIGHT LEFT`` takes an entry;
it leaves ``processing`` once the conductor accepted the batch (or it was
moved to the invalid list), and entries still there at start-up are
submitted again (``batch_id`` is the task id, so that is a no-op for a
batch the conductor already has). Replies are pushed from the conductor's
batch events, each once: a Lua script adds a member to a per-task set and
pushes only if it was new.

One entry never stops the bridge: one that is not a task (not JSON, nested
too deeply, lone surrogates, wrong types, too large) goes to the invalid
list, and so does one the bridge fails on in an unforeseen way; batch
events of unexpected shape push what they can and never block the events
behind them.
"""

import base64
import hashlib
import json
import logging
import time
import urllib.parse
from typing import NamedTuple

import redis

from rpcmq.bridges.common import (
    MAX_INPUT_BYTES,
    BridgeBase,
    InvalidInput,
    batch_id_for,
    check_url,
    is_safe_key,
    is_text,
    loads,
)

__all__ = ['RedisBridge', 'Task', 'derive_name', 'item_reply',
           'parse_entry']

LOG = logging.getLogger(__name__)

# KEYS: replied set, list; ARGV: member, value, ttl, expire the list too.
# Nothing is pushed for a task after its "end".
REPLY_LUA = """
if redis.call('SISMEMBER', KEYS[1], 'end') == 1 then return 0 end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[4] == '1' then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1
"""


class Task(NamedTuple):
    task_id: str
    batch_id: str
    items: list
    fns: list


def derive_name(fn, url):
    """``fn`` plus the URL's extension when ``fn`` has no dot, as the
    asyncio downloader did; without one in the URL path either, ``fn``
    stays bare and the conductor appends the image format's."""
    if '.' in fn:
        return fn
    base = urllib.parse.urlsplit(url).path.rsplit('/', 1)[-1]
    ext = base.rsplit('.', 1)[-1] if '.' in base else ''
    return '%s.%s' % (fn, ext) if ext else fn


def _text_id(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # PHP encodes numeric ids as numbers
    return value


def parse_entry(raw, name_template='{batch_id}/{fn}'):
    """Turn a task list entry into a Task, or raise InvalidInput."""
    entry = loads(raw, 'the entry')
    if not isinstance(entry, dict):
        raise InvalidInput('the entry must be a JSON object, not %s'
                           % type(entry).__name__)
    task_id = _text_id(entry.get('task_id'))
    if not isinstance(task_id, str) or not task_id:
        raise InvalidInput('the entry has no task_id')
    if not is_text(task_id):  # no reply list can be named after it
        raise InvalidInput('the task_id holds a lone UTF-16 surrogate')
    infos = entry.get('task_info')
    if not isinstance(infos, list) or not infos:
        raise InvalidInput('task_info must be a non-empty list of '
                           '{"fn", "url"}', task_id)
    batch_id = batch_id_for(task_id, 't-')
    items, fns, names, stems = [], [], {}, {}
    try:
        for idx, info in enumerate(infos):
            where = 'task_info[%d]' % idx
            if not isinstance(info, dict):
                raise InvalidInput('%s must be an object {"fn", "url"}'
                                   % where)
            url = check_url(info.get('url'), where + '.url')
            fn = _text_id(info.get('fn'))
            if not isinstance(fn, str) or not fn.strip():
                raise InvalidInput('%s needs "fn", a file name' % where)
            if not is_text(fn):
                raise InvalidInput('%s: fn holds a lone UTF-16 surrogate'
                                   % where)
            name = name_template.format(batch_id=batch_id,
                                        fn=derive_name(fn, url))
            if '/' in fn or not is_safe_key(name):
                raise InvalidInput('%s: fn %r is not a usable file name'
                                   % (where, fn))
            if name in names:
                raise InvalidInput('task_info[%d] and [%d] would both be '
                                   'stored as %r' % (names[name], idx, name))
            _check_stem(name, idx, stems)
            names[name] = idx
            items.append({'url': url, 'name': name})
            fns.append(fn)
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, task_id)
    return Task(task_id, batch_id, items, fns)


def _check_stem(name, idx, stems):
    """A bare name (no extension: the conductor appends the image
    format's) may become any ``name.<ext>``: InvalidInput if another item
    has that name with an extension, or is that name bare. ``stems``:
    stem -> (index, name, bare) of the items so far."""
    last = name.rsplit('/', 1)[-1]
    bare = '.' not in last
    stem = name if bare else name.rsplit('.', 1)[0]
    other = stems.get(stem)
    if other is not None and (bare or other[2]):
        taken = other[1] if bare else name
        raise InvalidInput('task_info[%d] and [%d] may both be stored as '
                           '%r (a file name without an extension gets the '
                           "image format's)" % (other[0], idx, taken))
    if stem not in stems or bare:
        stems[stem] = (idx, name, bare)


def _word(value):
    """A str or int field of an event as text Redis takes, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value[:200].encode('utf-8', 'replace').decode('utf-8')
    return None


def item_reply(outcome, fns):
    """``(member, fn, report)`` for a finished item: its fn if it was
    stored, else a JSON failure report for the errors list; None if the
    outcome is no item of the task (no dict, no index of ``fns``)."""
    if not isinstance(outcome, dict):
        return None
    idx = outcome.get('idx')
    if not isinstance(idx, int) or isinstance(idx, bool) or \
            not 0 <= idx < len(fns):
        return None
    fn, state = fns[idx], _word(outcome.get('state'))
    if state == 'done':
        return 'done:%d' % idx, fn, None
    attempts = _word(outcome.get('attempts'))
    report = {'fn': fn, 'url': outcome.get('url'), 'state': state,
              'attempts': outcome.get('attempts'),
              'error': outcome.get('error')}
    member = '%s:%d:%s' % (state, idx, attempts)
    return member, None, json.dumps(report)


def items_digest(items):
    """A short fingerprint of a batch's items (the submitted record keeps
    it: a refused entry of the same items is no other batch)."""
    return hashlib.sha1(json.dumps(items, sort_keys=True).encode(
        'utf-8', 'surrogatepass')).hexdigest()


def rejection_report(reason):
    return json.dumps({'fn': None, 'url': None, 'state': 'rejected',
                       'attempts': 0, 'error': {'type': 'InvalidEntry',
                                                'message': reason}})


class RedisBridge(BridgeBase):
    """Redis task list -> conductor batches -> Redis reply lists."""

    name = 'rpcmq-bridge-redis'
    transient = (redis.RedisError, OSError)

    def __init__(self, conf, transport, client=None):
        group = conf.redis_bridge
        super().__init__(conf, transport, group)
        self.redis = client or redis.Redis.from_url(
            group.url, socket_keepalive=True, health_check_interval=30)
        self.tasks = group.tasks_list
        self.processing = group.processing_list or self.tasks + ':processing'
        self.invalid = group.invalid_list or self.tasks + '_invalid'
        self.ttl = group.state_ttl
        self._reply = self.redis.register_script(REPLY_LUA)

    # -- keys ---------------------------------------------------------------

    def _submitted(self, batch_id):
        return '%s:submitted:%s' % (self.tasks, batch_id)

    def _replied(self, batch_id):
        return '%s:replied:%s' % (self.tasks, batch_id)

    def _resp(self, task_id):
        return '%s_%s' % (self.group.reply_prefix, task_id)

    def _errors(self, task_id):
        return self._resp(task_id) + self.group.errors_suffix

    # -- tasks --------------------------------------------------------------

    def source_problem(self):
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            return 'redis unreachable: %s' % exc
        return None

    def _run(self):
        backoff = self.backoff()
        recovered = False
        while not self.stopping:
            try:
                if not recovered:
                    # Entries a dead bridge (or a Redis error) left taken.
                    for raw in reversed(self.redis.lrange(self.processing,
                                                          0, -1)):
                        if self.stopping:
                            return
                        self.handle_one(raw)
                    recovered = True
                raw = self.redis.blmove(self.tasks, self.processing, 1,
                                        'RIGHT', 'LEFT')
                if raw is not None:
                    self.handle_one(raw)
                backoff.reset()
            except redis.RedisError as exc:
                LOG.warning('redis: %s; retrying in %.1fs', exc,
                            backoff.delay)
                recovered = False
                backoff.wait()
            except Exception:
                # Not an entry's doing (handle_one fences those): keep on.
                LOG.exception('%s: unexpected error; going on in %.1fs',
                              self.name, backoff.delay)
                recovered = False
                backoff.wait()

    def handle_one(self, raw):
        """``handle``, but an entry it fails on in an unforeseen way is
        moved to the invalid list instead of being taken again and again.
        Redis errors are left to the caller (the entry stays taken)."""
        try:
            self.handle(raw)
        except redis.RedisError:
            raise
        except Exception as exc:
            LOG.exception('%s: failed on a task entry; setting it aside',
                          self.name)
            self.reject(raw, InvalidInput('the bridge failed on the entry: '
                                          '%s: %s' % (type(exc).__name__,
                                                      exc)))

    def handle(self, raw):
        """Submit one taken entry, or move it to the invalid list."""
        try:
            task = parse_entry(raw, self.group.name_template)
        except InvalidInput as exc:
            return self.reject(raw, exc)
        LOG.info('task %s: %d items', task.task_id, len(task.items))
        digest = items_digest(task.items)
        recorded = self.redis.set(self._submitted(task.batch_id), json.dumps(
            {'task_id': task.task_id, 'fns': task.fns, 'digest': digest}),
            nx=True, ex=self.ttl)
        try:
            if not self.submit(task.batch_id, task.items):
                return  # stopping: stays in processing for the next start
        except InvalidInput as exc:
            # Refused by the conductor: end the producer's wait, unless
            # the task id names another batch this bridge submitted
            # (running or done): its replies are its own producer's.
            other = not recorded and self._other_batch(task.batch_id,
                                                       digest)
            if other:
                LOG.warning('task %s: batch %s was submitted before with '
                            'other items; its replies are left alone',
                            task.task_id, task.batch_id)
            return self.reject(raw, InvalidInput(exc.reason, task.task_id),
                               end_wait=not other)
        self.redis.lrem(self.processing, -1, raw)
        LOG.info('task %s submitted as batch %s', task.task_id,
                 task.batch_id)

    def _other_batch(self, batch_id, digest):
        """True if ``batch_id`` was submitted by this bridge with items
        other than those of ``digest`` (a record of the same items is
        this entry's own, left by a try the bridge died in)."""
        record = self.redis.get(self._submitted(batch_id))
        if record is None:
            return False
        try:
            return json.loads(record).get('digest') != digest
        except (ValueError, AttributeError):
            return True

    def reject(self, raw, exc, end_wait=None):
        """Move ``raw`` to the invalid list. If ``exc`` names a task id,
        its producer gets start/rejected/end when ``end_wait`` is true, or
        (None) if no batch of that id was submitted by this bridge."""
        if len(raw) > MAX_INPUT_BYTES:
            raw_kept = raw[:65536]  # the record says it is cut
        else:
            raw_kept = raw
        try:
            text, binary = raw_kept.decode('utf-8'), False
        except UnicodeDecodeError:
            text, binary = raw_kept.decode('utf-8', 'replace'), True
        LOG.warning('rejected task entry: %s; moved to %s: %.300s',
                    exc.reason, self.invalid, text[:300])
        task_id = exc.task_id
        if task_id is not None:
            batch_id = batch_id_for(task_id, 't-')
            if end_wait is None:
                # Unless that task id is running: end the producer's wait.
                end_wait = not self.redis.exists(self._submitted(batch_id))
            if end_wait:
                self._push(batch_id, task_id, [
                    ('start', 'start', False),
                    ('rejected', rejection_report(exc.reason), True),
                    ('end', 'end', False)])
        record = {'entry': text, 'reason': exc.reason, 'time': time.time()}
        if binary:  # "entry" lost bytes: keep them exactly too
            record['entry_base64'] = base64.b64encode(raw_kept).decode()
        if raw_kept is not raw:
            record.update(truncated=True, size=len(raw))
        record = json.dumps(record)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.invalid, record)
        pipe.lrem(self.processing, -1, raw)
        pipe.execute()

    # -- replies ------------------------------------------------------------

    def _push(self, batch_id, task_id, replies):
        """Push ``(member, value, to_errors)`` replies not pushed yet."""
        replied = self._replied(batch_id)
        for member, value, to_errors in replies:
            target = self._errors(task_id) if to_errors else \
                self._resp(task_id)
            self._reply(keys=[replied, target],
                        args=[member, value, self.ttl, int(to_errors)])

    def on_event(self, event_type, payload):
        batch_id = payload['batch_id']
        record = self.redis.get(self._submitted(batch_id))
        if record is None:
            return  # not a batch of this bridge
        record = json.loads(record)
        task_id, fns = record['task_id'], record['fns']
        replies = [('start', 'start', False)]
        if event_type == 'batch.item':
            outcomes = [payload]
        elif event_type == 'batch.end':
            # Every outcome again: nothing is missed if an item event was.
            outcomes = payload.get('items') or []
        else:
            outcomes = []
        if not isinstance(outcomes, list):
            outcomes = []
        for outcome in outcomes:
            try:
                reply = item_reply(outcome, fns)
            except (ValueError, TypeError, RecursionError) as exc:
                reply = None
                LOG.warning('task %s: an outcome of batch %s skipped: %s: '
                            '%s', task_id, batch_id, type(exc).__name__, exc)
            if reply is None:
                continue  # not an item of this task: nothing to push
            member, fn, report = reply
            replies.append((member, fn, False) if report is None
                           else (member, report, True))
        if event_type == 'batch.end':
            replies.append(('end', 'end', False))
            totals = payload.get('totals')
            if not isinstance(totals, dict):
                totals = {}
            LOG.info('task %s ended %s: %s done, %s failed, %s cancelled',
                     task_id, payload.get('state'), totals.get('done'),
                     totals.get('failed'), totals.get('cancelled'))
        self._push(batch_id, task_id, replies)
