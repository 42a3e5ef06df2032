"""rpcmq-bridge-mqtt: image sync messages from MQTT topics.

Threads, no eventlet: paho's network thread, one thread submitting
batches, and the notification listener publishing progress.
"""

import logging
import sqlite3
import sys

from rpcmq.cmd import service
from rpcmq.exceptions import RpcmqError

LOG = logging.getLogger('rpcmq.bridge.mqtt')


def main(argv=None):
    from rpcmq.bridges.mqtt import MqttBridge
    from rpcmq.transport import get_transport

    conf = service.prepare(sys.argv[1:] if argv is None else argv,
                           'rpcmq-bridge-mqtt')
    group = conf.mqtt_bridge
    if not group.topics:
        service.fatal('[mqtt_bridge] topics is empty: nothing to subscribe')
    try:
        transport = get_transport(conf)
        bridge = MqttBridge(conf, transport)
    except (OSError, sqlite3.Error) as exc:
        service.fatal('cannot open [mqtt_bridge] state_file %s: %s'
                      % (group.state_file, exc))
    except (RpcmqError, ValueError) as exc:
        service.fatal(exc)
    LOG.info('mqtt %s:%d as %s, topics %s; progress on %s', group.host,
             group.port, group.client_id, ', '.join(group.topics),
             group.progress_topic)
    code = service.run_until_signalled(bridge, conf, 'rpcmq-bridge-mqtt')
    transport.cleanup()
    return code


if __name__ == '__main__':
    sys.exit(main())
