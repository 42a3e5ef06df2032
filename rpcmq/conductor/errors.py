"""Errors of the batch conductor.

Fields are JSON-able keyword arguments kept on ``err.kwargs`` so the error
crosses the wire and is rebuilt on the caller with the same type.
"""

from rpcmq.exceptions import RpcmqError

__all__ = ['BatchNotFound', 'ConductorError', 'InvalidBatch']


class ConductorError(RpcmqError):
    """Any failure of the conductor; the base of the errors below."""

    msg_fmt = 'conductor failure: %(reason)s'


class InvalidBatch(ConductorError, ValueError):
    """A submitted batch, batch id, item or option is malformed."""

    msg_fmt = 'invalid batch: %(reason)s'


class BatchNotFound(ConductorError, LookupError):
    """No batch has this id (it was never submitted here)."""

    msg_fmt = ('batch %(batch_id)r not found; use the id that '
               'batch.submit returned')
