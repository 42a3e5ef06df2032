"""What the dashboard's pages ask for, over rpcmq only.

Batches come from the conductor (the calls ``rpcmq batch`` makes), live
progress and the servers from notifications (``live``), queue depths and
dead letters from the broker (passive declares: no management plugin
needed), thumbnails from the store. Every method blocks; the views run
them on a thread pool.
"""

import logging

from rpcmq.conductor.api import ConductorAPI
from rpcmq.conf import configured_topics
from rpcmq.dashboard.live import Live
from rpcmq.dashboard.thumbs import Thumbnails
from rpcmq.exceptions import ConfigError, RpcmqError
from rpcmq.storage import get_store

__all__ = ['Backend']

LOG = logging.getLogger(__name__)
#: Dead letters shown on a topic's page, as ``rpcmq dead show`` does.
DEAD_SHOWN = 20


class Backend:

    def __init__(self, conf, transport, store=None):
        self.conf = conf
        self.transport = transport
        self.api = ConductorAPI(transport, timeout=conf.rpc_response_timeout)
        self.live = Live(transport)
        if store is None:
            store = _store_or_none(conf)
        self.thumbs = Thumbnails(store, conf.dashboard.thumbnail_size)

    def start(self, ready_timeout=10.0):
        return self.live.start(ready_timeout)

    def stop(self):
        self.live.stop()

    # -- batches ------------------------------------------------------------

    def batches(self, offset, limit, state=None):
        return self.api.list(limit=limit, state=state, offset=offset)

    def batch(self, batch_id, offset=0, limit=50, states=None):
        return self.api.status(batch_id, items=True, offset=offset,
                               limit=limit, states=states)

    def totals(self, batch_id):
        return self.api.status(batch_id)

    def item(self, batch_id, idx):
        """The outcome of item ``idx``, or None if there is none."""
        found = self.api.status(batch_id, items=True, offset=idx,
                                limit=1)['items']
        return found[0] if found and found[0]['idx'] == idx else None

    def cancel(self, batch_id):
        return self.api.cancel(batch_id)

    def retry(self, batch_id):
        return self.api.retry(batch_id)

    # -- servers and queues -------------------------------------------------

    def topics(self, servers):
        """The configured topics and those servers announced."""
        return list(dict.fromkeys(configured_topics(self.conf) +
                                  [s['topic'] for s in servers]))

    def servers(self):
        """``{servers, queues, queues_error}``: the servers heard of, and
        per topic the requests waiting, consumers and dead letters."""
        servers = self.live.servers(self.conf.dashboard.server_silent_after)
        queues, error = [], None
        try:
            with self.transport.dead_letters(timeout=5) as broker:
                for topic in self.topics(servers):
                    messages, consumers = broker.waiting(topic)
                    queues.append({'topic': topic, 'messages': messages,
                                   'consumers': consumers,
                                   'dead': broker.count(topic)})
        except ConfigError:
            error = ('queue depths and dead letters are kept by RabbitMQ '
                     'only; this transport is %s' % self.transport.driver.url)
        except RpcmqError as exc:
            error = 'the broker did not answer: %s' % exc
        return {'servers': servers, 'queues': queues, 'queues_error': error}

    def dead(self, topic, limit=DEAD_SHOWN):
        """The first dead letters of ``topic``, left in place."""
        with self.transport.dead_letters(timeout=5) as broker:
            return [letter.as_dict() for letter in broker.peek(topic, limit)]


def _store_or_none(conf):
    """The configured store, or None (thumbnails then say why)."""
    try:
        return get_store(conf)
    except RpcmqError as exc:
        LOG.warning('dashboard: no thumbnails: the store cannot be opened: '
                    '%s', exc)
        return None
