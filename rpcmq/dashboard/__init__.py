"""``rpcmq-dashboard``: a web UI for batches and servers.

It is an rpcmq client like the CLI: batches come from the conductor over
RPC (``batch.list``, ``status``, ``cancel``, ``retry``), live progress
from ``batch.*`` notifications, servers from their ``server.alive``
announcements, queue depths from the broker. It keeps no state and opens
no database, so any number of dashboards can run. See ``app`` for the
server, ``views`` for the pages, ``auth`` for who may do what.
"""
