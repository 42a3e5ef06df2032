"""Replies to direct reply-to addresses not yet proven safe (RabbitMQ).

A request names where its reply goes; the server cannot trust that name.
RabbitMQ 3.10 closes the whole connection (541 INTERNAL_ERROR) that
publishes to an ``amq.rabbitmq.reply-to.*`` address it cannot decode or
whose node is not running: ``amq.rabbitmq.reply-to.AAAA.x`` will do. On
the reply connection that would lose every other reply written at that
moment, so one hostile caller (signed or not: a refused request is
answered too) would cost others their replies.

A direct reply-to address is ``amq.rabbitmq.reply-to.<pid>.<key>``; the
pid is an Erlang term naming the caller's node, then three integers. The
broker's verdict depends on the node (and on the term's shape), never on
the integers or the key. So ``Probe`` sends a reply whose pid head (all
but the integers) it has not seen the broker take, on a connection of its
own, with publisher confirms, one reply at a time: the broker acking it
proves the head, and later replies to it go on the reply connection
unconfirmed, as fast as before. A connection the broker closes on such a
reply (541) says that this reply's address is refused: it is dropped
(BrokerRefused), never written again. Everything proven is forgotten when
the reply connection is lost (a caller's node may have died with it).

A queue's name (anything else) is always safe: the default exchange drops
a message for a queue that does not exist.
"""

import base64
import binascii
import logging
import threading
import time

import amqp.exceptions
from amqp import spec

from rpcmq.exceptions import BrokerRefused, TransportError
from rpcmq.transport import errors, raw

__all__ = ['PREFIX', 'Probe', 'pid_head']

LOG = logging.getLogger(__name__)

PREFIX = 'amq.rabbitmq.reply-to.'
# Erlang's external term format: version 131, then a pid: NEW_PID_EXT
# (88: id, serial, creation in 12 bytes) or PID_EXT (103: 9 bytes), its
# node an ATOM_UTF8_EXT (118, 2-byte length) or SMALL_ATOM_UTF8_EXT (119).
_VERSION = 131
_INTEGERS = {88: 12, 103: 9}
_ATOM_LENGTH = {118: 2, 119: 1}
# Proven heads (and odd addresses) kept at most; a refused one never is.
MAX_PROVEN = 1024


def pid_head(address):
    """None if replying to ``address`` cannot upset the broker (it is not
    a direct reply-to address); else what decides whether it can: the
    bytes of its pid up to the integers, or the address itself when it is
    not shaped as RabbitMQ 3.10 writes them (then each such address is
    proven on its own)."""
    if not address.startswith(PREFIX):
        return None
    parts = address[len(PREFIX):].split('.')
    if len(parts) != 2 or not parts[1]:
        return address
    try:
        term = base64.b64decode(parts[0], validate=True)
    except (binascii.Error, ValueError):
        return address
    integers = _INTEGERS.get(term[1]) if len(term) > 3 else None
    width = _ATOM_LENGTH.get(term[2]) if integers else None
    if term[0] != _VERSION or width is None:
        return address
    head = 3 + width + int.from_bytes(term[3:3 + width], 'big')
    if len(term) != head + integers:
        return address
    return term[:head]


class Probe:
    """Sends replies to unproven addresses, one at a time, confirmed."""

    def __init__(self, driver):
        self.driver = driver
        self._lock = threading.Lock()  # one reply (and connection) at a time
        self._proven = set()
        self._conn = self._channel = None
        self._closed = False

    def unproven(self, address):
        """None if a reply to ``address`` may go on the reply connection;
        else the key to hand to ``send``."""
        head = pid_head(address)
        if head is None or head in self._proven:
            return None
        return head

    def forget(self):
        """The reply connection was lost: prove every address again."""
        self._proven.clear()

    def send(self, head, body, address, deadline, **properties):
        """Write one reply and wait for the broker to take it; BrokerRefused
        if it closed the connection on it (the reply is dropped),
        TransportError if it could not be written by ``deadline``."""
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(),
                                              0)):
            raise TransportError(reason='no turn to send a reply to %r in '
                                        'time: others are being probed'
                                 % address)
        try:
            self._send(head, body, address, deadline, properties)
        finally:
            self._lock.release()

    def _send(self, head, body, address, deadline, properties):
        for last_try in (False, True):
            try:
                channel = self._open(deadline)
                raw.send(channel, body, '', address, **properties)
                channel.wait([spec.Basic.Ack, spec.Basic.Nack],
                             callback=_nacked,
                             timeout=max(deadline - time.monotonic(),
                                         0.001))
            except amqp.exceptions.InternalError as exc:
                self._close()
                raise BrokerRefused(
                    url=str(self.driver.url),
                    what='the reply address %r' % address,
                    reason='it closed the connection on it (%s %s): not an '
                           'address it gave out, or its node is down; the '
                           'reply is dropped' % (exc.code, exc.reply_text
                                                 or 'INTERNAL_ERROR')) from exc
            except self.driver.recoverable_errors() as exc:
                self._close()
                if last_try or time.monotonic() >= deadline:
                    raise errors.classify(exc, self.driver.url) from exc
                continue
            if len(self._proven) >= MAX_PROVEN:
                self._proven.clear()
            self._proven.add(head)
            return

    def _open(self, deadline):
        if self._closed:  # a late reply: no connection nobody closes
            raise TransportError(reason='transport is closed')
        if self._channel is not None:
            return self._channel

        def errback(exc, interval):
            self.driver.retry_or_give_up(exc, interval, deadline)
        # No heartbeats: nobody reads this connection between replies.
        conn = self.driver.ensure_connection(
            self.driver.connection().clone(heartbeat=0), errback)
        try:
            channel = conn.channel()
            channel.confirm_select()
        except BaseException:
            _release(conn)
            raise
        self._conn, self._channel = conn, channel
        return channel

    def _close(self):
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            _release(conn)

    def close(self):
        """Close the connection, unless a reply holds it past a second
        (then it goes with the process); later replies are refused."""
        self._closed = True
        if self._lock.acquire(timeout=1.0):
            try:
                self._close()
            finally:
                self._lock.release()


def _nacked(method, *args):
    if method == spec.Basic.Nack:
        raise TransportError(reason='the broker could not take a reply '
                                    '(basic.nack)')


def _release(conn):
    try:
        conn.collect()
    except Exception as exc:
        LOG.debug('closing the probe connection: %r', exc)
