"""Delivery limits and dead letters for casts (RabbitMQ).

A cast that a server takes and never settles (its process died, its
connection dropped) is delivered again: at least once is what a cast
promises. A cast that kills every server that runs it would go round for
ever, and hold back the casts behind it. So the durable request queues
count deliveries, and a cast delivered ``[rabbit] max_deliveries`` times
without being settled is not run again: it is parked in its topic's
dead-letter queue, ``<topic>_dead``, with the reason, where ``rpcmq dead``
shows, replays or purges it.

* On a quorum queue the broker counts: ``x-delivery-count`` is the number
  of earlier deliveries that were returned to the queue.
* A classic queue only says ``redelivered`` (delivered before, how often
  unknown). A redelivered cast is published again at the tail of its queue
  with ``x-rpcmq-deliveries`` = deliveries so far, confirmed, and only then
  acked; the copy runs when its turn comes, behind the casts that waited.

Either way a cast runs at most ``max_deliveries`` times. The server checks
before running anything, so the check itself cannot be what kills it.

Calls are never counted or parked: a call delivered again is answered
``CallInterrupted`` by the server, and one whose caller is gone expires in
the broker or is dropped by the server (its queue has no dead-letter
exchange, so an expired call just goes).

A dead letter keeps the body, the headers (plus the ``x-rpcmq-dead-*``
ones below) and the correlation id, and names the queue it came from.
"""

import logging
import time

from rpcmq.transport.drivers import dead_letter_queue_name

__all__ = ['admit', 'park', 'COUNT_HEADER', 'REASON_HEADER', 'QUEUE_HEADER']

LOG = logging.getLogger(__name__)

COUNT_HEADER = 'x-rpcmq-deliveries'     # classic: deliveries before this copy
BROKER_COUNT = 'x-delivery-count'       # quorum: set by the broker
REASON_HEADER = 'x-rpcmq-dead-reason'   # delivery_limit | malformed
DETAIL_HEADER = 'x-rpcmq-dead-detail'   # the error, for malformed
QUEUE_HEADER = 'x-rpcmq-dead-queue'     # the queue it was taken from
TIME_HEADER = 'x-rpcmq-dead-at'         # seconds since the epoch
DEAD_HEADERS = (COUNT_HEADER, BROKER_COUNT, REASON_HEADER, DETAIL_HEADER,
                QUEUE_HEADER, TIME_HEADER)
KEPT_PROPERTIES = ('correlation_id', 'reply_to', 'message_id', 'type',
                   'app_id', 'priority', 'content_type', 'content_encoding')
CONFIRM_TIMEOUT = 30.0


class Source:
    """Where a message was taken from: a durable request queue of
    ``topic`` (``quorum`` tells which way deliveries are counted)."""

    __slots__ = ('queue', 'topic', 'quorum')

    def __init__(self, queue, topic):
        self.queue = queue
        self.topic = topic
        args = queue.queue_arguments or {}
        self.quorum = args.get('x-queue-type') == 'quorum'


def earlier_deliveries(headers, redelivered, quorum):
    """Deliveries of this cast before this one that were not settled."""
    headers = headers or {}
    if quorum:
        return _count(headers.get(BROKER_COUNT))
    return _count(headers.get(COUNT_HEADER)) + (1 if redelivered else 0)


def _count(value):
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def admit(driver, message, source, max_deliveries):
    """True if the cast ``message`` (kombu) may run now. Otherwise it has
    been settled here: parked (delivery limit reached), published again at
    the tail of a classic queue, or, if that publish was not confirmed,
    requeued to be tried again."""
    earlier = earlier_deliveries(message.headers, _redelivered(message),
                                 source.quorum)
    if earlier >= max_deliveries:
        LOG.error('cast %s on queue %s was delivered %d times without '
                  'finishing (its server died or lost its connection each '
                  'time); parking it in %s instead of running it again',
                  _describe(message), source.queue.name, earlier,
                  dead_letter_queue_name(source.topic))
        park(driver, message, source, 'delivery_limit',
             '%d deliveries' % earlier, earlier)
        return False
    if source.quorum or not _redelivered(message):
        return True
    headers = clean_headers(message.headers)
    headers[COUNT_HEADER] = earlier
    _move(driver, message, source.queue, headers,
          'published again at the tail of %s (delivery %d)'
          % (source.queue.name, earlier + 1))
    return False


def park(driver, message, source, reason, detail='', deliveries=None):
    """Move ``message`` to its topic's dead-letter queue, then ack it."""
    headers = clean_headers(message.headers)
    headers.update({REASON_HEADER: reason, DETAIL_HEADER: str(detail)[:1000],
                    QUEUE_HEADER: source.queue.name,
                    TIME_HEADER: int(time.time())})
    if deliveries is not None:
        headers[COUNT_HEADER] = deliveries
    _move(driver, message, driver.dead_letter_queue(source.topic), headers,
          'parked in %s (%s)' % (dead_letter_queue_name(source.topic),
                                 reason))


def _move(driver, message, queue, headers, done):
    """Publish a copy to ``queue`` (default exchange), wait for the
    broker's confirm, then ack the original; requeue it if the copy was
    not confirmed (the copy may still arrive: at least once)."""
    properties = kept_properties(message.properties)
    try:
        driver.publish(sent_body(message.body, message.properties), '',
                       queue.name, declare=(queue,),
                       confirm=True, delivery_mode=2, headers=headers,
                       deadline=time.monotonic() + CONFIRM_TIMEOUT,
                       **properties)
        confirmed = driver.flush(CONFIRM_TIMEOUT)
    except Exception as exc:
        LOG.error('cast %s could not be %s: %s; requeueing it',
                  _describe(message), done, exc)
        confirmed = False
    try:
        if confirmed:
            message.ack()
            LOG.info('cast %s %s', _describe(message), done)
        else:
            message.requeue()
    except Exception as exc:  # the connection is gone: redelivered anyway
        LOG.warning('could not settle cast %s: %s', _describe(message), exc)


def sent_body(body, properties):
    """The bytes the publisher sent. py-amqp decodes a body that has a
    ``content_encoding`` to text (in some codecs, such as UTF-7, to text
    holding lone surrogates): it is encoded back the same way. A copy
    encoded as UTF-8 instead could fail, and the cast was requeued for
    ever."""
    if not isinstance(body, str):
        return body
    try:
        return body.encode(properties.get('content_encoding') or 'utf-8',
                           'surrogatepass')
    except (LookupError, UnicodeError, TypeError):
        return body.encode('utf-8', 'surrogatepass')


def kept_properties(properties):
    """The properties a copy of a message keeps (parked or replayed)."""
    return {key: properties[key] for key in KEPT_PROPERTIES
            if properties.get(key) is not None}


def clean_headers(headers):
    """``headers`` without the delivery-count and dead-letter ones."""
    return {key: value for key, value in (headers or {}).items()
            if key not in DEAD_HEADERS}


def _redelivered(message):
    return bool(message.delivery_info.get('redelivered'))


def _describe(message):
    cid = message.properties.get('correlation_id')
    return '(correlation id %s)' % cid if cid else \
        '(%d bytes)' % len(message.body or b'')
