"""One error vocabulary: what a broker failure means, as an rpcmq error.

kombu and py-amqp report failures as socket errors, kombu's
``OperationalError`` (often wrapping the real cause) and AMQP reply codes.
``classify`` turns any of them into the ``TransportError`` subclass a
caller can act on:

* ``AuthenticationError``: the broker refused the login or the vhost
  (AMQP 403 / 530 while opening the connection). Retrying cannot help.
* ``BrokerRefused``: the broker refused an operation for good (403, 404,
  406 on a channel: no access, a missing entity, an entity declared with
  other arguments). Retrying the same request cannot help.
* ``BrokerUnreachable``: everything else (refused or reset sockets, DNS,
  timeouts, a broker that closed the connection); retried until the
  caller's deadline, then raised with the last error.

``is_permanent`` says whether a failure is one of the first two, so retry
loops can stop at once.
"""

import re

import amqp.exceptions

from rpcmq.exceptions import (
    AuthenticationError,
    BrokerRefused,
    BrokerUnreachable,
    TransportError,
)

__all__ = ['classify', 'is_permanent', 'is_missing_entity']

_LOGIN = (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)
_REFUSED = (amqp.exceptions.AccessRefused, amqp.exceptions.NotFound,
            amqp.exceptions.PreconditionFailed)
# Connection.Close during the handshake names no method, or Connection.Open
# (class 10) when the vhost is refused.
_HANDSHAKE_CLASSES = (0, 10)
_HINTS = {
    406: 'declare it with the same arguments, or delete the existing one '
         '(rabbitmqctl delete_queue / the management UI) and let rpcmq '
         'declare it again',
    403: "grant the user permissions on the vhost "
         "(rabbitmqctl set_permissions)",
    404: 'it does not exist on the broker',
}


_QUEUE_TYPE = re.compile(
    r"inequivalent arg 'x-queue-type' for queue '(?P<queue>[^']*)' in vhost "
    r"'(?P<vhost>[^']*)': received (?:the value '(?P<wanted>[^']*)'|none)"
    r".*but current is (?:the value '(?P<current>[^']*)'|none)")


def _queue_type_hint(reason):
    """What to do when a queue exists with another type than configured."""
    match = _QUEUE_TYPE.search(reason)
    if match is None:
        return None
    queue = match.group('queue')
    current = match.group('current') or 'classic'
    wanted = match.group('wanted') or 'classic'
    return ("queue %r exists as a %s queue but [rabbit] queue_type = %s. "
            "Set queue_type = %s to keep using it, or move it to %s: stop "
            "the servers of that topic, let the queue drain, delete it "
            "(rabbitmqctl delete_queue %s -p %s) and start them again"
            % (queue, current, wanted, current, wanted, queue,
               match.group('vhost')))


def _root(exc):
    """The AMQP error behind ``exc`` (kombu wraps it), else ``exc``."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, amqp.exceptions.AMQPError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _text(err):
    return (err.reply_text or str(err)).rstrip('. ')


def _is_login(err):
    sig = getattr(err, 'method_sig', None) or (0, 0)
    return isinstance(err, _LOGIN) and sig[0] in _HANDSHAKE_CLASSES


def is_permanent(exc):
    """True if retrying what raised ``exc`` cannot succeed."""
    if isinstance(exc, (AuthenticationError, BrokerRefused)):
        return True
    err = _root(exc)
    return err is not None and (_is_login(err) or isinstance(err, _REFUSED))


def is_missing_entity(exc):
    """True for AMQP 404 (an exchange or queue the broker does not have)."""
    return isinstance(_root(exc), amqp.exceptions.NotFound)


def classify(exc, url):
    """The TransportError (subclass) that ``exc`` means for broker ``url``."""
    if isinstance(exc, TransportError):
        return exc
    err = _root(exc)
    if err is not None and _is_login(err):
        host = url.hosts[0] if url.hosts else None
        return AuthenticationError(
            url=str(url), user=getattr(host, 'username', None) or 'guest',
            vhost=url.virtual_host or '/', reason=_text(err))
    if err is not None and isinstance(err, _REFUSED):
        what = err.method_name or 'the request'
        reason = _text(err)
        hint = _queue_type_hint(reason) or _HINTS.get(err.reply_code)
        return BrokerRefused(url=str(url), what=what, code=err.reply_code,
                             reason='%s; %s' % (reason, hint) if hint
                             else reason)
    return BrokerUnreachable(url=str(url), reason=str(exc) or
                             type(exc).__name__)
