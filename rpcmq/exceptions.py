"""Errors a caller of rpcmq can see, local and remote.

Every rpcmq error takes an optional message and keyword fields; the fields are
kept on ``self.kwargs`` so the error can travel over the wire and be rebuilt
with the same type and fields on the caller (see ``rpcmq.rpc.wire``).
"""

__all__ = [
    'RpcmqError', 'MessagingTimeout', 'RemoteError', 'NoSuchMethod',
    'UnsupportedVersion', 'MessageTooLarge', 'MalformedMessage',
    'CallInterrupted', 'InternalError', 'Unauthenticated', 'TransportError',
    'BrokerUnreachable', 'AuthenticationError', 'BrokerRefused',
    'InvalidTarget', 'ConfigError', 'InvalidArguments', 'MethodDisabled',
]


class RpcmqError(Exception):
    """Base of every rpcmq error.

    Subclasses set ``msg_fmt``; it is formatted with the keyword fields when
    no explicit message is given.
    """

    msg_fmt = 'an rpcmq error occurred'

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def __getattr__(self, name):
        # Fields are readable as attributes: err.status, err.url, ...
        kwargs = self.__dict__.get('kwargs', {})
        if name in kwargs:
            return kwargs[name]
        raise AttributeError(name)

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.kwargs))


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class MessagingTimeout(RpcmqError):
    msg_fmt = 'no reply to %(method)s on %(target)s within %(timeout)ss'


class CallInterrupted(RpcmqError):
    """The server that took a call stopped or lost its connection before
    answering, and the broker delivered the call again. It is not run a
    second time: it may or may not have run."""

    msg_fmt = ('call to %(method)s was interrupted: the server that took it '
               'stopped or lost its broker connection before answering; it '
               'may or may not have run, and was not run again')


class Unauthenticated(RpcmqError):
    """A signed-message check failed: the request (or its reply) was
    unsigned, signed by an unknown or unauthorised key, tampered with,
    outside the clock skew, or replayed. Says which, never which key would
    have worked."""

    msg_fmt = 'refused: %(reason)s'


class InternalError(RpcmqError):
    msg_fmt = 'the server failed to handle the request: %(reason)s'


class TransportError(RpcmqError):
    """The broker could not take or deliver a message. Every failure that
    leaves the transport is one of these subclasses (or this class)."""

    msg_fmt = 'transport failure: %(reason)s'


class BrokerUnreachable(TransportError):
    """No connection to the broker within the deadline; ``reason`` holds
    the last socket error."""

    msg_fmt = ('broker %(url)s unreachable: %(reason)s; is it running and '
               'is the URL right?')


class AuthenticationError(TransportError):
    """The broker refused the login (wrong user, password or vhost)."""

    msg_fmt = ('broker %(url)s refused the login of user %(user)r on vhost '
               '%(vhost)r: %(reason)s; check the user, password and vhost '
               'in the transport URL')


class BrokerRefused(TransportError):
    """The broker refused an operation for good (AMQP 403/404/406): an
    entity declared with other arguments, a missing exchange, no access.
    Not retried: the same request would be refused again."""

    msg_fmt = 'broker %(url)s refused %(what)s: %(reason)s'


class ConfigError(RpcmqError):
    msg_fmt = 'bad configuration: %(reason)s'


class InvalidTarget(RpcmqError, ValueError):
    msg_fmt = 'invalid target %(target)s: %(reason)s'


class MessageTooLarge(RpcmqError):
    msg_fmt = ('message of %(size)d bytes exceeds max_message_size '
               '(%(limit)d bytes)')


class MalformedMessage(RpcmqError):
    msg_fmt = 'malformed message: %(reason)s'


class NoSuchMethod(RpcmqError, AttributeError):
    msg_fmt = 'no endpoint method %(method)r in namespace %(namespace)r'


class MethodDisabled(RpcmqError):
    """The endpoint has the method, but this server's configuration keeps
    it from callers."""

    msg_fmt = '%(method)s is disabled on this server; %(reason)s'


class InvalidArguments(RpcmqError, TypeError):
    msg_fmt = 'bad arguments for %(method)s: %(reason)s'


class UnsupportedVersion(RpcmqError):
    msg_fmt = ('no endpoint supports version %(version)s '
               'in namespace %(namespace)r for method %(method)r')


class RemoteError(RpcmqError):
    """A failure on the server whose type could not be rebuilt here.

    ``exc_type`` is the remote class name, ``value`` its message and
    ``traceback`` the remote traceback text.
    """

    msg_fmt = 'remote %(exc_type)s: %(value)s'

    def __init__(self, message=None, exc_type=None, value=None,
                 traceback=None, **kwargs):
        super().__init__(message, exc_type=exc_type, value=value,
                         traceback=traceback, **kwargs)
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback
