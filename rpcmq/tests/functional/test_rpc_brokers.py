"""The RPC scenarios against the real RabbitMQ and Redis of this machine."""

from rpcmq.tests.scenarios.rpc import *  # noqa: F401,F403
