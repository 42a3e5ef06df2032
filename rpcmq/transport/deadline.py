"""Call deadlines on the wire: ``x-rpcmq-deadline``.

A call carries its absolute deadline in the ``x-rpcmq-deadline`` header, as
integer milliseconds since the Unix epoch, beside the AMQP ``expiration``
(its timeout, which the broker applies while the request waits in a
queue). A server drops a call whose deadline has passed by its own clock
before running it: its caller has given up, so running it would be a side
effect nobody waits for. Servers and clients need clocks in sync (NTP) to
within a small fraction of their call timeouts.
"""

import time

__all__ = ['HEADER', 'headers_for', 'expired_by']

HEADER = 'x-rpcmq-deadline'


def headers_for(timeout):
    """The headers of a call that may wait ``timeout`` seconds."""
    return {HEADER: int((time.time() + timeout) * 1000)}


def expired_by(headers, now=None):
    """Seconds past the deadline in ``headers`` (>= 0: expired, its caller
    has given up), else None when there is no usable deadline."""
    value = (headers or {}).get(HEADER)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    now = time.time() if now is None else now
    return now - value / 1000.0
