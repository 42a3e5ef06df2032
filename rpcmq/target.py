"""Target: where a message goes, and what an endpoint answers to."""

__all__ = ['Target']

_FIELDS = ('exchange', 'topic', 'server', 'namespace', 'version', 'fanout')


class Target:
    """Identifies a destination (client side) or a listening point (server).

    :param exchange: topic exchange; ``None`` means the configured
        ``control_exchange``.
    :param topic: the service name; every server of a topic shares its queue.
    :param server: one server of the topic (routing key ``topic.server``).
    :param namespace: groups endpoint methods; ``None`` is the default one.
    :param version: ``"major.minor"`` the caller needs or the endpoint
        implements.
    :param fanout: deliver a cast to every server of the topic.
    """

    __slots__ = _FIELDS

    def __init__(self, exchange=None, topic=None, server=None,
                 namespace=None, version=None, fanout=False):
        self.exchange = exchange
        self.topic = topic
        self.server = server
        self.namespace = namespace
        self.version = version
        self.fanout = bool(fanout)

    def __call__(self, **kwargs):
        """Return a copy with some fields replaced."""
        fields = {f: getattr(self, f) for f in _FIELDS}
        unknown = set(kwargs) - set(_FIELDS)
        if unknown:
            raise TypeError('unknown Target fields: %s' % sorted(unknown))
        fields.update(kwargs)
        return Target(**fields)

    def __eq__(self, other):
        return isinstance(other, Target) and all(
            getattr(self, f) == getattr(other, f) for f in _FIELDS)

    def __hash__(self):
        return hash(tuple(getattr(self, f) for f in _FIELDS))

    def __repr__(self):
        shown = ', '.join('%s=%r' % (f, getattr(self, f)) for f in _FIELDS
                          if getattr(self, f) not in (None, False))
        return '<Target %s>' % shown
