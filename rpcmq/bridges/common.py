"""What the Redis and MQTT bridges share: input checks, batch ids, the
submit-with-retry loop and the start/stop plumbing around the conductor's
batch events.

No one message may stop a bridge: a task entry, MQTT message or batch
event the bridge cannot use (not JSON, nested too deeply, lone UTF-16
surrogates, wrong types, larger than ``MAX_INPUT_BYTES``) is set aside or
dropped with a log line, and the bridge goes on with the next one.
"""

import hashlib
import json
import logging
import threading
import time

from rpcmq.conductor.errors import InvalidBatch
from rpcmq.conductor.validation import BATCH_ID_RE, url_problem
from rpcmq.exceptions import MessageTooLarge
from rpcmq.notify import get_notification_listener
from rpcmq.target import Target

__all__ = ['Backoff', 'BridgeBase', 'InvalidInput', 'MAX_INPUT_BYTES',
           'batch_id_for', 'check_url', 'is_safe_key', 'is_text', 'loads']

LOG = logging.getLogger(__name__)

EVENTS = ('batch.start', 'batch.item', 'batch.end')
#: Largest task entry or MQTT message taken (bigger ones are rejected
#: unread: parsing them could exhaust memory).
MAX_INPUT_BYTES = 16 * 1024 * 1024
#: Longest reason kept in an InvalidInput (reasons quote the input).
MAX_REASON = 1000


class InvalidInput(ValueError):
    """A task entry or message the bridge cannot turn into a batch."""

    def __init__(self, reason, task_id=None):
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + '...'
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id


def shown(value, limit=200):
    """``repr(value)``, cut to ``limit`` characters (cheaply for text)."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[:limit]) + '...'
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def is_text(value):
    """True for a str that UTF-8 can encode: JSON's ``\\ud800`` escapes
    decode to lone surrogates, which no key, list or wire format takes."""
    if not isinstance(value, str):
        return False
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def loads(raw, what):
    """``json.loads(raw)``, or InvalidInput saying why ``what`` is not
    usable JSON (too large, not UTF-8, nested too deeply)."""
    if len(raw) > MAX_INPUT_BYTES:
        raise InvalidInput('%s is %d bytes, more than the %d a bridge takes'
                           % (what, len(raw), MAX_INPUT_BYTES))
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidInput('%s is not UTF-8 text' % what)
    except RecursionError:
        raise InvalidInput('%s is nested too deeply' % what)
    except ValueError as exc:
        raise InvalidInput('%s is not JSON: %s' % (what, exc))


def batch_id_for(name, prefix='h-'):
    """``name`` if the conductor accepts it as a batch id, else a stable
    ``prefix`` + sha1 of it (so the same name always maps the same)."""
    if BATCH_ID_RE.match(name):
        return name
    return prefix + hashlib.sha1(
        name.encode('utf-8', 'surrogatepass')).hexdigest()


def check_url(url, where='url'):
    """Return ``url`` stripped, or raise InvalidInput: http(s) with a host
    (the rule the CLI applies too: ``validation.url_problem``)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput('%s must be a non-empty string, not %s'
                           % (where, shown(url)))
    problem = url_problem(url)
    if problem is not None:
        raise InvalidInput('%s %s is %s' % (where, shown(url.strip()),
                                            problem)
                           if problem.startswith('not ') else
                           '%s %s %s' % (where, shown(url.strip()), problem))
    return url.strip()


def is_safe_key(key):
    """True if ``key`` is a valid key for every store (the ``file`` store's
    rules are the strictest: no empty, ``.`` or ``..`` segment)."""
    if not is_text(key) or not key or key.startswith('/'):
        return False
    if '\\' in key or any(ord(c) < 0x20 or c == '\x7f' for c in key):
        return False
    if len(key.encode('utf-8')) > 1023:
        return False
    return all(part not in ('', '.', '..') and not part.startswith('.rpcmq-')
               for part in key.split('/'))


class Backoff:
    """Exponential waits between retries, cut short by ``stop``."""

    def __init__(self, stop, first=1.0, longest=30.0):
        self.stop = stop
        self.first = first
        self.longest = longest
        self.delay = first

    def wait(self):
        """Sleep the current delay and double it; False if stopping."""
        delay, self.delay = self.delay, min(self.delay * 2, self.longest)
        return not self.stop.wait(delay)

    def reset(self):
        self.delay = self.first


class BridgeBase:
    """A worker thread that feeds the conductor, plus a listener on a
    durable pool queue for ``batch.*`` events (handled by ``on_event``).

    The listener starts first and submissions wait until it consumes, so
    the pool queue exists (and keeps events) before any batch is sent.
    """

    name = 'bridge'
    #: Errors of on_event worth retrying (the output is unreachable).
    transient = (OSError,)
    #: Errors of on_event never retried, even if ``transient`` has them:
    #: the event itself is the problem (UnicodeError: lone surrogates).
    #: (InvalidInput, which says why, is dropped before these.)
    permanent = (RecursionError, UnicodeError)

    def __init__(self, conf, transport, group):
        from rpcmq.conductor.api import ConductorAPI

        self.conf = conf
        self.group = group
        self.api = ConductorAPI(transport, timeout=group.submit_timeout)
        self._stop = threading.Event()
        self.listener = get_notification_listener(
            transport, [Target(topic='batch.*')], [self], pool=group.pool)
        self._thread = None

    @property
    def stopping(self):
        return self._stop.is_set()

    def backoff(self):
        return Backoff(self._stop, self.group.retry_interval,
                       self.group.retry_interval_max)

    def start(self):
        self.listener.start(ready_timeout=3.0)
        if not self.listener.ready.is_set():
            LOG.warning('%s: not consuming batch events yet (broker down?); '
                        'submissions wait until it does', self.name)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=self.name)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self.listener.stop()

    def wait(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)
        self.listener.wait(timeout)
        return self._thread is None or not self._thread.is_alive()

    def health(self):
        """None while events are consumed, the worker runs and the
        source answers; else why not (``/healthz``)."""
        if self._thread is not None and not self._thread.is_alive() and \
                not self.stopping:
            return '%s: worker thread stopped' % self.name
        return self.listener.problem() or self.source_problem()

    def source_problem(self):
        """None if the Redis or MQTT side answers; else why not."""
        return None

    def _run(self):
        raise NotImplementedError

    def submit(self, batch_id, items):
        """Send a batch until the conductor takes it.

        Returns True once accepted (again: resubmitting an id is a no-op),
        False if the bridge stops first; raises InvalidInput if the
        conductor rejects it, or one item alone is larger than a message
        may be. Unreachable conductor or broker: retried. A batch larger
        than one message (``max_message_size``) is sent a chunk at a time
        (``ConductorAPI.submit_chunked``: resumed, not repeated, when
        sent again).
        """
        try:
            # What the RPC client would fail on, every time: not retried.
            json.dumps(items, ensure_ascii=False).encode('utf-8')
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput('the batch cannot be sent: %s: %s'
                               % (type(exc).__name__, exc))
        backoff = self.backoff()
        while not self.stopping:
            if not self.listener.ready.is_set():
                # Its events would have no queue to wait in yet.
                if backoff.delay == backoff.first:
                    LOG.warning('%s: batch %s waits until batch events are '
                                'consumed (broker unreachable?)', self.name,
                                batch_id)
                backoff.wait()
                continue
            try:
                self._send(items, batch_id)
                return True
            except InvalidBatch as exc:
                raise InvalidInput(str(exc))
            except MessageTooLarge as exc:  # the same every time
                raise InvalidInput('the batch cannot be sent: %s' % exc)
            except Exception as exc:
                LOG.warning('%s: batch %s not submitted (%s: %s); retrying '
                            'in %.1fs', self.name, batch_id,
                            type(exc).__name__, exc, backoff.delay)
                backoff.wait()
        return False

    def _send(self, items, batch_id):
        try:
            self.api.submit(items, batch_id=batch_id)
        except MessageTooLarge:  # raised before anything was sent
            self.api.submit_chunked(items, batch_id=batch_id)

    # -- notification endpoint -------------------------------------------

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if event_type not in EVENTS or not isinstance(payload, dict):
            return
        batch_id = payload.get('batch_id')
        if not isinstance(batch_id, str) or not BATCH_ID_RE.match(batch_id):
            return  # the conductor's rule: no batch of ours (or of anyone)
        delay = self.group.retry_interval
        while True:
            # The event is acked when this returns: retry what may pass
            # (also while stopping: if the process exits first, the event
            # stays queued and is handled after the restart). What fails
            # the same way every time is dropped, or it would stop every
            # event behind it.
            try:
                self.on_event(event_type, payload)
                return
            except InvalidInput as exc:  # says why: no traceback
                LOG.error('%s: dropping %s of batch %s: %s', self.name,
                          event_type, batch_id, exc.reason)
                return
            except self.permanent:
                LOG.exception('%s: dropping %s of batch %s', self.name,
                              event_type, batch_id)
                return
            except self.transient as exc:
                LOG.warning('%s: %s of batch %s not handled (%s: %s); '
                            'retrying in %.1fs', self.name, event_type,
                            batch_id, type(exc).__name__, exc, delay)
            except Exception:
                LOG.exception('%s: dropping %s of batch %s', self.name,
                              event_type, batch_id)
                return
            time.sleep(delay)
            delay = min(delay * 2, self.group.retry_interval_max)

    def on_event(self, event_type, payload):
        raise NotImplementedError
