"""Seeing a running rpcmq: Prometheus metrics, the status port, logs."""
