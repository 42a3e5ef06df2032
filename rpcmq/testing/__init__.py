"""Helpers for testing services built on rpcmq, without a broker.

``InProcessServer`` runs endpoints on the in-process ``memory://`` broker;
``imageserver`` and ``ossserver`` are local stand-ins for the web and for
Aliyun OSS.
"""
