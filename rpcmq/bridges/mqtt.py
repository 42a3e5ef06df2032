"""MQTT bridge: image sync messages become conductor batches.

A message on a subscribed topic (``sync``) is a comma-separated list of
image URLs, as the sync client of the C side publishes them, or JSON: a
list of URLs / ``{"url", "key"?, "name"?}`` items, or ``{"batch_id"?,
"items": [...]}``. Without an id the batch id is the sha1 of topic and
payload, so a QoS 1 redelivery (or the same message sent again) is not
downloaded twice.

The session is persistent (fixed client id, ``clean_session=False``, QoS
1) and messages are acked by hand once the conductor accepted the batch
(or the message was rejected), so nothing published while the bridge is
down or busy is lost. Progress of each batch is published as JSON on
``<topic>/progress``; rejected messages on ``<topic>/errors``.

One message never stops the bridge: one it cannot use (not UTF-8, not
JSON, nested too deeply, lone surrogates, wrong types, more than
``MAX_INPUT_BYTES``) is reported on ``<topic>/errors`` and acked, and a
batch event it cannot publish (body not JSON-able or too large, output
topic longer than MQTT's 65,535 bytes) is dropped with a log line; so is
an error report that cannot be published.
"""

import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import urllib.parse

from paho.mqtt import client as mqtt

from rpcmq.bridges.common import (
    BATCH_ID_RE,
    MAX_INPUT_BYTES,
    BridgeBase,
    InvalidInput,
    check_url,
    is_safe_key,
    is_text,
    shown,
)
from rpcmq.conductor.validation import ITEM_FIELDS

__all__ = ['BatchTopics', 'MqttBridge', 'parse_message', 'url_key']

LOG = logging.getLogger(__name__)

PUBLISH_WAIT = 60.0
#: The largest payload MQTT can carry (paho raises ValueError beyond it).
MQTT_MAX_PAYLOAD = 268435455
#: The longest topic MQTT can carry, in UTF-8 bytes (paho: ValueError).
MQTT_MAX_TOPIC = 65535


def url_key(url, mode='path'):
    """The storage key ``mode`` gives ``url``, or None (let the image
    server name it): ``path`` mirrors the URL path, as the sync client
    saved files; ``host_path`` puts the host in front."""
    if mode == 'auto':
        return None
    parts = urllib.parse.urlsplit(url)
    key = parts.path.lstrip('/')
    if mode == 'host_path':
        key = '%s/%s' % (parts.hostname, key)
    return key if is_safe_key(key) else None


def _json_item(item, idx):
    where = 'item %d' % idx
    if isinstance(item, str):
        return {'url': check_url(item, where)}
    if not isinstance(item, dict):
        raise InvalidInput('%s must be a URL or {"url", "key"?, "name"?}'
                           % where)
    unknown = sorted(set(item) - set(ITEM_FIELDS))
    if unknown:
        raise InvalidInput('%s has unknown field(s) %s; allowed: url, key, '
                           'name' % (where, ', '.join(unknown)))
    for field in ('key', 'name'):
        value = item.get(field)
        if value is not None and not is_text(value):
            raise InvalidInput('%s %s must be a UTF-8 string, not %s'
                               % (where, field, shown(value)))
    out = dict(item, url=check_url(item.get('url'), where + ' url'))
    return {k: v for k, v in out.items() if v is not None}


def _parse_json(text):
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidInput('bad JSON: nested too deeply')
    except ValueError as exc:
        raise InvalidInput('bad JSON: %s' % exc)
    batch_id = None
    if isinstance(data, dict):
        batch_id, items = data.get('batch_id'), data.get('items')
        if batch_id is not None and (not isinstance(batch_id, str)
                                     or not BATCH_ID_RE.match(batch_id)):
            raise InvalidInput('batch_id %r must be 1-64 letters, digits or '
                               '"_.:-", starting with a letter or digit'
                               % (batch_id,))
    else:
        items = data
    if not isinstance(items, list):
        raise InvalidInput('JSON must be a list of items or {"batch_id"?, '
                           '"items": [...]}')
    return batch_id, [_json_item(item, n) for n, item in enumerate(items)]


def parse_message(topic, payload, key_mode='path'):
    """``(batch_id, items)`` for a message, or raise InvalidInput."""
    if isinstance(payload, str):
        payload = payload.encode('utf-8')
    if len(payload) > MAX_INPUT_BYTES:
        raise InvalidInput('the payload is %d bytes, more than the %d a '
                           'bridge takes' % (len(payload), MAX_INPUT_BYTES))
    try:
        text = payload.decode('utf-8').strip()
    except UnicodeDecodeError:
        raise InvalidInput('the payload is not UTF-8 text')
    if not text:
        raise InvalidInput('empty payload')
    if text[0] in '[{':
        batch_id, items = _parse_json(text)
    else:
        batch_id = None
        parts = [part.strip() for part in text.split(',')]
        items = [{'url': check_url(part, 'URL %d' % n)}
                 for n, part in enumerate(parts) if part]
    unique, seen_urls = [], set()
    keys = {item['key'] for item in items if item.get('key')}
    for item in items:
        if set(item) == {'url'}:
            if item['url'] in seen_urls:
                continue  # the same image twice in one message
            seen_urls.add(item['url'])
            key = url_key(item['url'], key_mode)
            if key is not None and key not in keys:
                item['key'] = key
                keys.add(key)
        unique.append(item)
    if not unique:
        raise InvalidInput('no image URLs in the payload')
    if batch_id is None:
        digest = hashlib.sha1(topic.encode('utf-8') + b'\n' + payload)
        batch_id = 'mqtt-' + digest.hexdigest()
    return batch_id, unique


def is_output_topic(topic, templates):
    """True if ``topic`` is one the bridge publishes to (progress/errors),
    so a wildcard subscription does not feed the bridge its own output."""
    for template in templates:
        prefix, _, suffix = template.partition('{topic}')
        if topic.startswith(prefix) and topic.endswith(suffix) and \
                len(topic) > len(prefix) + len(suffix):
            return True
    return False


class BatchTopics:
    """Which batches this bridge submitted, from which topic (SQLite)."""

    def __init__(self, path, ttl):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute('CREATE TABLE IF NOT EXISTS batches (batch_id '
                         'TEXT PRIMARY KEY, topic TEXT NOT NULL, '
                         'created REAL NOT NULL)')

    def add(self, batch_id, topic):
        now = time.time()
        with self._lock:
            self._db.execute('DELETE FROM batches WHERE created < ?',
                             (now - self.ttl,))
            self._db.execute('INSERT OR IGNORE INTO batches VALUES (?, ?, ?)',
                             (batch_id, topic, now))

    def topic(self, batch_id):
        with self._lock:
            row = self._db.execute('SELECT topic FROM batches WHERE '
                                   'batch_id = ?', (batch_id,)).fetchone()
        return row[0] if row else None

    def close(self):
        with self._lock:
            self._db.close()


class MqttBridge(BridgeBase):
    """MQTT messages -> conductor batches -> MQTT progress messages."""

    name = 'rpcmq-bridge-mqtt'
    transient = (OSError, RuntimeError, ValueError)

    def __init__(self, conf, transport, state=None):
        group = conf.mqtt_bridge
        super().__init__(conf, transport, group)
        self.state = state or BatchTopics(group.state_file, group.state_ttl)
        self._messages = queue.Queue()
        self._session = 0  # bumped per connection: mids die with it
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=group.client_id,
            clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if group.username:
            self.client.username_pw_set(group.username,
                                        group.password or None)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._outputs = (group.progress_topic, group.errors_topic)

    def start(self):
        super().start()
        group = self.group
        self.client.connect_async(group.host, group.port, group.keepalive)
        self.client.loop_start()

    def source_problem(self):
        if not self.client.is_connected():
            return 'MQTT broker %s:%s not connected' % (self.group.host,
                                                        self.group.port)
        return None

    def wait(self, timeout=None):
        done = super().wait(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.state.close()
        return done

    # -- MQTT callbacks (network thread) ---------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            LOG.error('mqtt %s:%s refused the connection: %s',
                      self.group.host, self.group.port, reason_code)
            return
        self._session += 1
        LOG.info('mqtt connected as %s (session present: %s); subscribing '
                 'to %s', self.group.client_id, flags.session_present,
                 ', '.join(self.group.topics))
        client.subscribe([(topic, 1) for topic in self.group.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = any(code.is_failure for code in reason_codes)
        LOG.log(logging.ERROR if refused else logging.INFO, 'mqtt %s to %s',
                'refused the subscription' if refused else 'subscribed',
                ', '.join(self.group.topics))

    def _on_disconnect(self, client, userdata, flags, reason_code,
                       properties):
        if not self.stopping:
            LOG.warning('mqtt disconnected (%s); reconnecting', reason_code)

    def _on_message(self, client, userdata, msg):
        # paho re-raises what a callback raises, ending its network loop.
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse those; be safe
            topic = bytes(msg._topic).decode('utf-8', 'replace')
        self._messages.put((self._session, topic, msg.payload, msg.mid,
                            msg.qos))

    # -- messages (worker thread) ------------------------------------------

    def _run(self):
        while not self.stopping:
            try:
                session, topic, payload, mid, qos = self._messages.get(
                    timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.take(session, topic, payload, mid, qos)
            except Exception:
                LOG.exception('message on %s not handled; it is redelivered '
                              'after a restart', topic)

    def take(self, session, topic, payload, mid, qos):
        """Handle one message, then ack it if it is done with."""
        LOG.info('message on %s: %d bytes%s', topic, len(payload),
                 '' if session == self._session else ' (stale)')
        if self.handle(topic, payload) and qos > 0 and \
                session == self._session:
            # After a reconnect the broker sends it again with a new
            # mid; acking the old one could ack another message.
            self.client.ack(mid, qos)

    def handle(self, topic, payload):
        """Submit one message; True when it can be acked."""
        if is_output_topic(topic, self._outputs):
            return True
        try:
            batch_id, items = parse_message(topic, payload,
                                            self.group.key_mode)
        except InvalidInput as exc:
            self.report(topic, payload, exc.reason)
            return True
        except Exception as exc:
            # Parsing fails the same way every time: not worth a redelivery.
            LOG.exception('message on %s: parsing failed', topic)
            self.report(topic, payload, 'the bridge failed on the message: '
                        '%s: %.300s' % (type(exc).__name__, exc))
            return True
        self.state.add(batch_id, topic)
        try:
            if not self.submit(batch_id, items):
                return False  # stopping: the broker redelivers it
        except InvalidInput as exc:
            self.report(topic, payload, exc.reason, batch_id)
            return True
        LOG.info('message on %s submitted as batch %s (%d items)', topic,
                 batch_id, len(items))
        return True

    def report(self, topic, payload, reason, batch_id=None):
        LOG.warning('rejected message on %s: %s: %r', topic, reason,
                    payload[:300])
        body = {'topic': topic, 'reason': reason, 'batch_id': batch_id,
                'payload': payload[:2000].decode('utf-8', 'replace'),
                'time': time.time()}
        try:
            self.publish(self.group.errors_topic.format(topic=topic), body,
                         timeout=5)
        except InvalidInput as exc:  # the same every time: not retried
            LOG.warning('error report for %s given up: %s', shown(topic),
                        exc.reason)
        except self.transient as exc:
            LOG.warning('error report for %s not confirmed: %s', topic, exc)

    def publish(self, topic, body, timeout=PUBLISH_WAIT):
        """Publish JSON at QoS 1 and wait for the broker's ack.
        InvalidInput if ``body`` cannot be published on ``topic`` at all
        (the same every time: not worth a retry)."""
        try:
            size = len(topic.encode('utf-8'))
        except UnicodeEncodeError:
            raise InvalidInput('topic %s is not UTF-8 text' % shown(topic))
        if size > MQTT_MAX_TOPIC:
            raise InvalidInput('topic %s is %d bytes, more than the %d bytes '
                               'an MQTT topic may have'
                               % (shown(topic), size, MQTT_MAX_TOPIC))
        try:
            data = json.dumps(body)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput('%s: not JSON-able: %s: %s' % (
                shown(topic), type(exc).__name__, exc))
        if len(data) > MQTT_MAX_PAYLOAD:
            raise InvalidInput('%s: %d bytes is more than MQTT carries'
                               % (shown(topic), len(data)))
        deadline = time.monotonic() + timeout
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise ConnectionError('not connected to the MQTT broker')
            time.sleep(0.1)
        try:
            info = self.client.publish(topic, data, qos=1)
        except ValueError as exc:
            # paho's checks of the message itself (topic too long or with
            # wildcards, payload too large, QoS): it fails every time.
            # (A full outgoing queue is ValueError from is_published and
            # wait_for_publish below: transient, retried.)
            raise InvalidInput('cannot publish on topic %s: %s'
                               % (shown(topic), exc))
        while not info.is_published():
            if time.monotonic() > deadline:
                raise TimeoutError('no PUBACK for %s' % topic)
            info.wait_for_publish(0.5)

    # -- batch events -----------------------------------------------------

    def on_event(self, event_type, payload):
        topic = self.state.topic(payload['batch_id'])
        if topic is None:
            return  # not a batch of this bridge
        body = dict(payload, event=event_type)
        if body.get('state') == 'done_with_failures':
            # The bridge's protocol predates it: 'done', with the failures
            # in the totals, as before.
            body['state'] = 'done'
        self.publish(self.group.progress_topic.format(topic=topic), body)
        if event_type == 'batch.end':
            LOG.info('batch %s from %s ended %s: %s', payload['batch_id'],
                     topic, payload.get('state'), payload.get('totals'))
