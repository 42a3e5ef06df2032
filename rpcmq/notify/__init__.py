"""Notifications: events published on a topic exchange, and listeners
that subscribe to them by routing-key pattern (``batch.*``, ``#``)."""

from rpcmq.notify.listener import (
    NotificationListener,
    get_notification_listener,
)
from rpcmq.notify.notifier import Notifier

__all__ = ['Notifier', 'NotificationListener', 'get_notification_listener']
