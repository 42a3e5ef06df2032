"""Remove what a test or benchmark declared on a real broker.

Durable queues and exchanges outlive the process that declared them, so a
test suite or benchmark run would leave them behind on the broker.
"""

import kombu

from rpcmq.transport.drivers import RedisDriver
from rpcmq.transport.rabbit import RabbitDriver
from rpcmq.transport.url import parse_url

__all__ = ['delete_entities']


def delete_entities(url, queues=(), exchanges=(), strict=False):
    """Delete ``queues`` and ``exchanges`` on the broker of transport URL
    ``url`` (``rabbit://``, ``amqp://``, ``redis://``; ``memory://`` keeps
    nothing). Unless ``strict``, one that cannot be deleted (already gone,
    never declared) is skipped."""
    parsed = parse_url(url)
    if parsed.scheme == 'memory':
        return
    driver = RedisDriver if parsed.scheme == 'redis' else RabbitDriver
    with kombu.Connection(parsed.kombu_urls(
            driver.kombu_scheme, driver.default_vhost)) as conn:
        for delete, names in (('queue_delete', queues),
                              ('exchange_delete', exchanges)):
            for name in names:
                try:
                    getattr(conn.default_channel, delete)(name)
                except Exception:
                    if strict:
                        raise
                    conn.collect()
