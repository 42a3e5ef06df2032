"""Options of the Redis list bridge and the MQTT bridge."""

from oslo_config import cfg


def _common(pool, what):
    return [
        cfg.StrOpt('pool', default=pool,
                   help='Durable RabbitMQ queue the bridge reads batch.* '
                        'events from; events wait there while the bridge '
                        'is down. Give each bridge deployment its own '
                        'name; instances sharing a name share the work.'),
        cfg.IntOpt('submit_timeout', default=30, min=1,
                   help='Seconds a batch.submit call to the conductor '
                        'waits for its reply before it is retried.'),
        cfg.FloatOpt('retry_interval', default=1.0, min=0.01,
                     help='Seconds before the first retry when the '
                          'conductor or %s is unreachable; doubles up '
                          'to retry_interval_max.' % what),
        cfg.FloatOpt('retry_interval_max', default=30.0, min=0.01,
                     help='Longest wait in seconds between two retries.'),
    ]


REDIS_OPTS = [
    cfg.StrOpt('url', default='redis://127.0.0.1:6379/0', secret=True,
               help='Redis holding the task list and the reply lists: '
                    'redis://[:password@]host:port/db.'),
    cfg.StrOpt('tasks_list', default='batch_download_tasks',
               help='List producers LPUSH task entries to: JSON '
                    '{"task_id": "...", "task_info": [{"fn": "name", '
                    '"url": "..."}]}. The bridge takes the oldest (right) '
                    'end.'),
    cfg.StrOpt('processing_list', default='',
               help='List holding entries taken but not yet accepted by '
                    'the conductor; resubmitted at start-up. Default: '
                    '<tasks_list>:processing.'),
    cfg.StrOpt('invalid_list', default='',
               help='List that receives unusable entries as JSON {"entry", '
                    '"reason", "time"}. Default: <tasks_list>_invalid.'),
    cfg.StrOpt('reply_prefix', default='batch_download_resp',
               help='Replies go to the list <reply_prefix>_<task_id>: '
                    '"start", the fn of each item stored, then "end".'),
    cfg.StrOpt('errors_suffix', default='_errors',
               help='Failed items (and rejected entries) are reported as '
                    'JSON on <reply_prefix>_<task_id><errors_suffix>, '
                    'pushed before "end".'),
    cfg.StrOpt('name_template', default='{batch_id}/{fn}',
               help='Where an item is stored: a template with {batch_id} '
                    '(the task id) and {fn} (the entry\'s fn, given the '
                    'URL\'s extension when it has none, as the PHP/Python '
                    'downloader did; else the image format\'s). The '
                    'default keeps one directory per task.'),
    cfg.IntOpt('state_ttl', default=7 * 24 * 3600, min=60,
               help='Seconds the bridge remembers a task (which batches '
                    'it submitted, which replies it pushed) and keeps its '
                    'errors list.'),
] + _common('rpcmq-bridge-redis', 'Redis')

MQTT_OPTS = [
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='MQTT broker host.'),
    cfg.PortOpt('port', default=1883, help='MQTT broker port.'),
    cfg.StrOpt('username', default='',
               help='MQTT user name; empty connects anonymously.'),
    cfg.StrOpt('password', default='', secret=True,
               help='MQTT password.'),
    cfg.StrOpt('client_id', default='rpcmq-bridge-mqtt',
               help='Fixed MQTT client id: the broker keeps this id\'s '
                    'session (subscriptions and QoS 1 messages that '
                    'arrive while the bridge is down). Must be unique '
                    'per bridge.'),
    cfg.IntOpt('keepalive', default=60, min=5,
               help='Seconds between MQTT keepalive pings.'),
    cfg.ListOpt('topics', default=['sync'],
                help='Topics to subscribe to (QoS 1). A message is a '
                     'comma-separated list of image URLs, or JSON: a '
                     'list of URLs/items or {"batch_id"?, "items": [...]}.'),
    cfg.StrOpt('progress_topic', default='{topic}/progress',
               help='Topic of the JSON progress messages of a batch '
                    '(batch.start/item/end); {topic} is the topic its '
                    'message came on.'),
    cfg.StrOpt('errors_topic', default='{topic}/errors',
               help='Topic where rejected messages are reported as JSON '
                    'with the reason.'),
    cfg.StrOpt('key_mode', default='path',
               choices=[('path', 'the URL path, as the sync client lays '
                                 'out its files'),
                        ('host_path', '<host>/<URL path>'),
                        ('auto', 'the image server\'s key_template')],
               help='Storage key of items that name none.'),
    cfg.StrOpt('state_file', default='/var/lib/rpcmq/bridge-mqtt.sqlite',
               help='SQLite file remembering which batches the bridge '
                    'submitted and from which topic, so progress of '
                    'batches survives a restart.'),
    cfg.IntOpt('state_ttl', default=7 * 24 * 3600, min=60,
               help='Seconds a submitted batch is remembered.'),
] + _common('rpcmq-bridge-mqtt', 'the MQTT broker')


def list_opts():
    return [('redis_bridge', REDIS_OPTS), ('mqtt_bridge', MQTT_OPTS)]
