"""The conductor's data model in one import: ``schema`` (tables, rows,
states), ``validation`` (what users submit), ``sql`` (statements inside a
transaction) and ``engine`` (SQLite and PostgreSQL set-up)."""

from rpcmq.conductor.engine import make_engine
from rpcmq.conductor.errors import BatchNotFound, InvalidBatch
from rpcmq.conductor.schema import (
    ACTIVE,
    BATCH_STATES,
    CANCELLED,
    DONE,
    FAILED,
    ITEM_STATES,
    OPEN,
    PENDING,
    RUNNING,
    TERMINAL,
    TOTALS,
    ItemRow,
    batches,
    conductors,
    items,
    metadata,
)
from rpcmq.conductor.sql import (
    MAX_ERROR_CHARS,
    batch_state,
    count,
    error_dict,
    load_items,
    move_item,
    now_or,
    other_items,
    settle_batch,
    state_filter,
    summaries,
)
from rpcmq.conductor.validation import (
    BATCH_ID_RE,
    ITEM_FIELDS,
    items_digest,
    validate_batch_id,
    validate_items,
    validate_options,
    validate_state,
)

__all__ = [
    'ACTIVE', 'BATCH_ID_RE', 'BATCH_STATES', 'BatchNotFound', 'CANCELLED',
    'DONE', 'FAILED', 'ITEM_FIELDS', 'ITEM_STATES', 'InvalidBatch', 'ItemRow',
    'MAX_ERROR_CHARS', 'OPEN', 'PENDING',
    'RUNNING', 'TERMINAL', 'TOTALS', 'batch_state', 'batches', 'conductors',
    'count',
    'error_dict', 'items', 'items_digest', 'load_items', 'make_engine',
    'metadata', 'move_item', 'now_or', 'other_items', 'settle_batch',
    'state_filter', 'summaries',
    'validate_batch_id', 'validate_items', 'validate_options',
    'validate_state',
]
