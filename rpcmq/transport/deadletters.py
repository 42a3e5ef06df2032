"""Dead-letter queues: count, look at, replay and purge parked casts.

Casts parked by ``deliveries`` wait in ``<topic>_dead`` (RabbitMQ). This
module is what ``rpcmq dead`` and operators' scripts use:

* ``count(topic)``: messages waiting (0 if the queue was never made).
* ``waiting(topic)``: messages and consumers of the topic's own queue,
  where its requests wait, for dashboards.
* ``peek(topic, limit)``: the first ``limit`` dead letters, left in place
  (taken without ack on a channel of their own, which is then closed, so
  the broker puts them back in order; a quorum queue counts them again a
  moment later).
* ``replay(topic, limit)``: each goes back to the queue it came from, as a
  new message (its delivery count starts again), confirmed before the dead
  letter is acked: nothing is lost if this stops half way.
* ``purge(topic)``: drop them all.
"""

import datetime
import logging
import time

import amqp.exceptions

from rpcmq.exceptions import BrokerRefused, ConfigError
from rpcmq.transport import deliveries, errors
from rpcmq.transport.drivers import dead_letter_queue_name

__all__ = ['DeadLetter', 'DeadLetters']

LOG = logging.getLogger(__name__)


class DeadLetter:
    """One parked cast as the broker holds it."""

    def __init__(self, message):
        headers = dict(message.headers or {})
        self.body = message.body
        self.headers = headers
        self.properties = dict(message.properties)
        self.reason = _text(headers.get(deliveries.REASON_HEADER)) or \
            'unknown'
        self.detail = _text(headers.get(deliveries.DETAIL_HEADER)) or ''
        self.queue = _text(headers.get(deliveries.QUEUE_HEADER)) or ''
        self.deliveries = headers.get(deliveries.COUNT_HEADER)
        at = headers.get(deliveries.TIME_HEADER)
        self.parked_at = datetime.datetime.fromtimestamp(
            int(at), datetime.timezone.utc) if at else None

    def as_dict(self):
        try:
            body = self.body.decode('utf-8')
        except (AttributeError, UnicodeDecodeError):
            body = repr(self.body)
        return {
            'reason': self.reason, 'detail': self.detail,
            'queue': self.queue, 'deliveries': self.deliveries,
            'parked_at': self.parked_at.isoformat() if self.parked_at
            else None,
            'correlation_id': self.properties.get('correlation_id'),
            'headers': {k: _text(v) for k, v in
                        deliveries.clean_headers(self.headers).items()},
            'body': body,
        }


class DeadLetters:
    """The dead-letter queues of a transport's broker."""

    def __init__(self, driver, timeout=15.0):
        if not driver.delivery_limits:
            raise ConfigError(reason='dead-letter queues are kept by '
                                     'RabbitMQ only; this transport is %s'
                              % driver.url)
        self.driver = driver
        self.timeout = timeout
        self._conn = None

    # -- a connection of our own, opened on first use --------------------

    def _connection(self):
        if self._conn is None:
            deadline = time.monotonic() + self.timeout

            def errback(exc, interval):
                self.driver.retry_or_give_up(exc, interval, deadline)
            self._conn = self.driver.ensure_connection(
                self.driver.connection(), errback)
        return self._conn

    def _probe(self, name):
        """(channel, message count); channel None if ``name`` does not
        exist (a 404 closes the channel it came on)."""
        channel, ok = self._declare_passive(name)
        return channel, ok.message_count if ok else 0

    def _declare_passive(self, name):
        """(channel, queue_declare_ok), (None, None) if ``name`` does not
        exist."""
        channel = self._connection().channel()
        try:
            return channel, channel.queue_declare(queue=name, passive=True)
        except amqp.exceptions.NotFound:
            return None, None
        except Exception as exc:
            raise errors.classify(exc, self.driver.url) from exc

    def close(self):
        if self._conn is not None:
            self._conn.release()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- the verbs ---------------------------------------------------------

    def waiting(self, topic):
        """``(messages, consumers)`` of the queue the requests of
        ``topic`` wait in (not a server's own queue); (0, 0) if it was
        never declared. For dashboards: a passive declare, no
        management plugin needed."""
        channel, ok = self._declare_passive(topic)
        if channel is None:
            return 0, 0
        channel.close()
        return ok.message_count, ok.consumer_count

    def count(self, topic):
        channel, count = self._probe(dead_letter_queue_name(topic))
        if channel is not None:
            channel.close()
        return count

    def peek(self, topic, limit=10):
        """Up to ``limit`` dead letters of ``topic``, oldest first."""
        channel, count = self._probe(dead_letter_queue_name(topic))
        if channel is None:
            return []
        found = []
        try:
            for _ in range(min(limit, count)):
                message = channel.basic_get(dead_letter_queue_name(topic),
                                            no_ack=False)
                if message is None:
                    break
                found.append(DeadLetter(_Wrapped(message)))
        finally:
            channel.close()  # unacked: back in the queue, in order
        return found

    def replay(self, topic, limit=None):
        """Put up to ``limit`` (None: all) dead letters back on the queues
        they came from; the number replayed."""
        name = dead_letter_queue_name(topic)
        channel, count = self._probe(name)
        if channel is None:
            return 0
        done = 0
        checked = set()
        try:
            while limit is None or done < limit:
                message = channel.basic_get(name, no_ack=False)
                if message is None:
                    break
                letter = DeadLetter(_Wrapped(message))
                target = letter.queue or topic
                if target not in checked:
                    self._require_queue(target, topic)
                    checked.add(target)
                self._republish(letter, target)
                channel.basic_ack(message.delivery_tag)
                done += 1
        finally:
            channel.close()  # what was taken and not replayed goes back
        LOG.info('replayed %d dead letters of %s', done, topic)
        return done

    def purge(self, topic):
        channel, count = self._probe(dead_letter_queue_name(topic))
        if channel is None:
            return 0
        try:
            return channel.queue_purge(dead_letter_queue_name(topic)) or 0
        finally:
            channel.close()

    def _require_queue(self, queue, topic):
        channel, _ = self._probe(queue)
        if channel is None:
            raise BrokerRefused(
                url=str(self.driver.url), what='replay of %s' % topic,
                code=404, reason='queue %r, where these casts came from, '
                                 'no longer exists; start a server of topic '
                                 '%s so it is declared, then replay again'
                                 % (queue, topic))
        channel.close()

    def _republish(self, letter, queue):
        headers = deliveries.clean_headers(letter.headers)
        properties = deliveries.kept_properties(letter.properties)
        deadline = time.monotonic() + self.timeout
        self.driver.publish(letter.body, '', queue, confirm=True,
                            delivery_mode=2, headers=headers,
                            deadline=deadline, **properties)
        if not self.driver.flush(self.timeout):
            raise BrokerRefused(url=str(self.driver.url), what='replay',
                                code=0, reason='the broker did not confirm '
                                'the replayed cast within %ss; it stays in '
                                'the dead-letter queue' % self.timeout)


class _Wrapped:
    """py-amqp's Message with the names kombu's Message uses."""

    def __init__(self, message):
        self.properties = dict(message.properties)
        # py-amqp decodes a body by its content_encoding: back to bytes
        self.body = deliveries.sent_body(message.body, self.properties)
        self.headers = self.properties.pop('application_headers', None) or {}
        self.delivery_tag = message.delivery_tag


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) \
        else value
