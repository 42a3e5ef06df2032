"""Options of the transport: broker URL, exchange, message limits, TLS."""

from oslo_config import cfg

DEFAULT_OPTS = [
    cfg.StrOpt('transport_url', default='memory://', secret=True,
               help='Broker URL: rabbit://user:pass@host:port[,host2:port]/'
                    'vhost, amqp://..., redis://host:6379/0 or memory:// '
                    '(in-process, for tests and the embedded demo). '
                    'Several hosts in one rabbit URL fail over in order.'),
    cfg.StrOpt('control_exchange', default='rpcmq',
               help='Topic exchange that carries requests when a Target '
                    'names no exchange. Queues are named after topics, not '
                    'exchanges: deployments that share a vhost need '
                    'distinct topics (or separate vhosts).'),
    cfg.BoolOpt('oslo_compat', default=False,
                help='Speak oslo.messaging\'s rabbit wire and topology, so '
                     'rpcmq and oslo.messaging processes share topics: '
                     'servers also take oslo.messaging requests ('
                     '"oslo.version" envelopes) and answer them as '
                     'oslo.messaging does; the topic exchange and queues '
                     'are declared with oslo.messaging\'s flags ([rabbit] '
                     'amqp_durable_queues, queue_type) and fanout exchanges '
                     'are transient. Set control_exchange to the oslo '
                     'services\' one (oslo.messaging\'s default is '
                     '"openstack"). See docs/oslo-migration.md.'),
    cfg.IntOpt('rpc_response_timeout', default=60, min=1,
               help='Seconds a call waits for its reply when neither the '
                    'client nor prepare() sets a timeout.'),
    cfg.IntOpt('max_message_size', default=4 * 1024 * 1024, min=1024,
               help='Largest encoded request or reply in bytes. Clients '
                    'refuse to publish larger ones; servers answer larger '
                    'ones with an error.'),
    cfg.IntOpt('rpc_prefetch_count', default=16, min=1,
               deprecated_for_removal=True,
               deprecated_reason='A server now takes as many messages as '
                                 'it has workers (executor_thread_pool_size)'
                                 ' and settles each when its work is done, '
                                 'so the rest wait in the broker.',
               help='Ignored.'),
    cfg.StrOpt('notification_exchange', default='rpcmq_notifications',
               help='Topic exchange that carries notifications such as '
                    'batch.start, batch.item and batch.end; their routing '
                    'key is the event type.'),
    cfg.ListOpt('allowed_remote_exmods', default=[],
                help='Modules whose exceptions a caller rebuilds with their '
                     'own type (builtins and rpcmq errors always are); '
                     'others arrive as RemoteError.'),
]

RABBIT_OPTS = [
    cfg.IntOpt('heartbeat_timeout_threshold', default=60, min=0,
               help='AMQP heartbeat in seconds; 0 disables heartbeats.'),
    cfg.BoolOpt('ssl', default=False,
                help='Connect to RabbitMQ over TLS (amqps:// URLs always '
                     'do; their default port is 5671).'),
    cfg.StrOpt('ssl_ca_file', default='',
               help='CA bundle that signs the broker certificate.'),
    cfg.StrOpt('ssl_cert_file', default='',
               help='Client certificate for TLS client authentication.'),
    cfg.StrOpt('ssl_key_file', default='', secret=True,
               help='Private key of the client certificate.'),
    cfg.BoolOpt('ssl_verify_hostname', default=True,
                help='Check that the broker certificate names the host '
                     'connected to (each failover host in turn), and send '
                     'that name as SNI. The certificate chain is always '
                     'verified.'),
    cfg.FloatOpt('rabbit_retry_interval', default=0.5, min=0,
                 help='Seconds before the first reconnect attempt.'),
    cfg.FloatOpt('rabbit_retry_backoff', default=1.0, min=0,
                 help='Seconds added to the wait after each failed '
                      'reconnect attempt.'),
    cfg.FloatOpt('rabbit_interval_max', default=10.0, min=0,
                 help='Longest wait between reconnect attempts.'),
    cfg.IntOpt('rabbit_max_retries', default=0, min=0,
               help='Reconnect attempts before an operation fails; 0 retries '
                    'until the call timeout runs out.'),
    cfg.BoolOpt('direct_reply_to', default=True,
                help="Receive replies through RabbitMQ's direct reply-to "
                     '(amq.rabbitmq.reply-to) instead of an exclusive reply '
                     'queue per process.'),
    cfg.BoolOpt('publisher_confirms', default=True,
                help='Publish casts and notifications with publisher '
                     'confirms: a cast the broker did not confirm (nack, '
                     'lost connection) is published again, and closing the '
                     'transport waits for outstanding confirms.'),
    cfg.IntOpt('confirm_window', default=1024, min=1,
               help='Casts that may await their confirm at once; cast() '
                    'waits for room beyond that. 1 makes every cast wait '
                    'for its own confirm.'),
    cfg.IntOpt('connection_pool_size', default=30, min=1,
               help='Broker connections a process keeps for publishing.'),
    cfg.BoolOpt('amqp_durable_queues', default=False,
                help='With oslo_compat and queue_type = classic: declare the '
                     'topic exchange and request queues durable, as '
                     'oslo.messaging does with its option of the same name '
                     '(set both alike). Quorum queues are always durable '
                     '(oslo.messaging: rabbit_quorum_queue = true). Without '
                     'oslo_compat they are always durable.'),
    cfg.StrOpt('queue_type', default='quorum',
               choices=[('quorum', 'replicated on the cluster (Raft); '
                                   'RabbitMQ 3.10 or later'),
                        ('classic', 'one node holds the messages; for '
                                    'queues declared before quorum became '
                                    'the default')],
               help='Type of the durable request queues (<topic> and '
                    '<topic>.<server>). Fanout and reply queues are always '
                    'exclusive classic queues. An existing queue keeps its '
                    'type: switching needs the queue deleted (servers '
                    'stopped, queue drained) and declared again.'),
    cfg.IntOpt('max_deliveries', default=5, min=1,
               help='Times a cast may be delivered to servers without '
                    'being settled (the server died or lost its connection '
                    'while running it) before it is moved to its topic\'s '
                    'dead-letter queue, <topic>_dead, instead of running '
                    'again. See "rpcmq dead". RabbitMQ only.'),
    cfg.BoolOpt('dead_letter_malformed', default=False,
                help='Move casts a server refuses (malformed, too large, '
                     'unsigned where signing is required) to the '
                     'dead-letter queue with the reason, instead of '
                     'dropping them after logging. RabbitMQ only.'),
]


def list_opts():
    return [('DEFAULT', DEFAULT_OPTS), ('rabbit', RABBIT_OPTS)]
