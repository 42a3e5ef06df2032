"""rpcmq: RPC messaging on kombu, with image transfer and batches.

The public API::

    transport = rpcmq.get_transport(conf, url='rabbit://...')
    client = rpcmq.RPCClient(transport, rpcmq.Target(topic='image'))
    server = rpcmq.get_rpc_server(transport, target, endpoints)

Names are imported on first use, so ``rpcmq.cmd`` daemons can monkey-patch
eventlet before kombu or any socket code is imported.
"""

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version('rpcmq')
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    __version__ = '0+unknown'

_EXPORTS = {
    'Target': 'rpcmq.target',
    'Transport': 'rpcmq.transport',
    'get_transport': 'rpcmq.transport',
    'RPCClient': 'rpcmq.rpc.client',
    'get_rpc_client': 'rpcmq.rpc.client',
    'RPCServer': 'rpcmq.rpc.server',
    'get_rpc_server': 'rpcmq.rpc.server',
    'expected_exceptions': 'rpcmq.rpc.dispatcher',
    'get_notification_listener': 'rpcmq.notify',
    'Notifier': 'rpcmq.notify',
}
_EXPORTS.update(dict.fromkeys((
    'RpcmqError', 'MessagingTimeout', 'RemoteError', 'NoSuchMethod',
    'UnsupportedVersion', 'InvalidArguments', 'InvalidTarget',
    'MessageTooLarge', 'MalformedMessage', 'TransportError',
    'BrokerUnreachable', 'AuthenticationError', 'BrokerRefused',
    'CallInterrupted', 'Unauthenticated', 'ConfigError', 'MethodDisabled'),
    'rpcmq.exceptions'))

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError('module rpcmq has no attribute %r' % name)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
