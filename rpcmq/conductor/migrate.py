"""The conductor's schema, versioned with Alembic (``migrations/``).

``upgrade`` brings a database to the newest revision. It runs in one
transaction holding a lock (``pg_advisory_xact_lock`` on PostgreSQL,
SQLite's write lock), so conductors started together on an empty database
take turns: the first creates the tables, the others find them current.
A database created before migrations existed (tables, no
``alembic_version``) is stamped at the baseline first, then upgraded.

``rpcmq-conductor --upgrade-db`` runs it and exits; a conductor runs it at
start-up unless ``[conductor] auto_upgrade_db = false``, in which case it
refuses to start on an outdated schema and says how to upgrade.
"""

import contextlib
import logging
import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from rpcmq.exceptions import ConfigError

__all__ = ['upgrade', 'current', 'head', 'require_current']

LOG = logging.getLogger(__name__)
# Alembic says "Context impl ..." at INFO on every run; our own line below
# says what changed.
logging.getLogger('alembic').setLevel(logging.WARNING)

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'migrations')
BASELINE = '0001'
#: pg_advisory_xact_lock key that serializes schema upgrades.
LOCK_KEY = 0x72706D75


def _config(conn=None):
    cfg = Config()
    cfg.set_main_option('script_location', MIGRATIONS)
    cfg.attributes['connection'] = conn
    return cfg


def head():
    """The newest revision this rpcmq knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _revision(conn):
    return MigrationContext.configure(conn).get_current_revision()


def current(engine, lock=contextlib.nullcontext()):
    """The database's revision (None: no tables of ours yet, or tables
    from before migrations)."""
    with lock, engine.connect() as conn:
        return _revision(conn)


def upgrade(engine, lock=contextlib.nullcontext()):
    """Bring the schema to ``head()``; return ``(before, after)``."""
    with lock, engine.begin() as conn:
        if conn.dialect.name == 'postgresql':
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
        before = _revision(conn)
        cfg = _config(conn)
        if before is None and sa.inspect(conn).has_table('batches'):
            LOG.info('conductor database has tables from before schema '
                     'versions; marking them as revision %s', BASELINE)
            command.stamp(cfg, BASELINE)
            before = BASELINE
        command.upgrade(cfg, 'head')
        after = _revision(conn)
    if before != after:
        LOG.info('conductor database upgraded from %s to %s',
                 before or 'empty', after)
    return before, after


def require_current(engine, url, lock=contextlib.nullcontext()):
    """ConfigError unless the database is at ``head()``."""
    found, wanted = current(engine, lock), head()
    if found != wanted:
        raise ConfigError(reason=(
            'the conductor database %s is at schema revision %s, this rpcmq '
            'needs %s; run "rpcmq-conductor --config-file ... --upgrade-db" '
            '(every conductor on it should be stopped or of this version), '
            'or set [conductor] auto_upgrade_db = true'
            % (url, found or 'none (no tables, or tables from before '
               'schema versions)', wanted)))
