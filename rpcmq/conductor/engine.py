"""SQLAlchemy engines for the conductor's database: SQLite set up for
durability and many threads, PostgreSQL through psycopg2."""

import contextlib
import importlib.util
import os
import threading

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

__all__ = ['READ', 'make_engine', 'make_read_engine']

#: Execution option of a connection whose transactions only read.
READ = 'rpcmq_read_only'

#: Seconds a SQLite writer waits for the write lock before failing.
SQLITE_POOL_SIZE = 4
SQLITE_BUSY_TIMEOUT = 30.0


def _sqlite_on_connect(dbapi_conn, _record):
    # Let the "begin" hook below issue BEGIN IMMEDIATE instead of the
    # driver's deferred BEGIN: a deferred transaction that reads and then
    # writes can fail at once with "database is locked" under WAL.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ('journal_mode=WAL', 'synchronous=NORMAL',
                   'foreign_keys=ON',
                   f'busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}'):
        cursor.execute('PRAGMA ' + pragma)
    cursor.close()


def _sqlite_on_begin(conn):
    # A reader (READ option) begins DEFERRED: under WAL it reads a snapshot
    # and never waits for the writer.
    conn.exec_driver_sql('BEGIN' if conn.get_execution_options().get(READ)
                         else 'BEGIN IMMEDIATE')


def make_read_engine(engine, echo=False):
    """An engine of its own for read-only transactions, so reads never
    wait in the writers' pool (``engine`` itself where there is one
    shared connection: ``sqlite://``)."""
    url = engine.url
    if isinstance(engine.pool, StaticPool):
        return engine
    if url.get_backend_name() != 'sqlite':
        return sa.create_engine(url, echo=echo, pool_pre_ping=True,
                                pool_size=2, max_overflow=4)
    read = sa.create_engine(
        url, echo=echo, pool_size=2, max_overflow=0,
        pool_timeout=SQLITE_BUSY_TIMEOUT,
        connect_args={'check_same_thread': False,
                      'timeout': SQLITE_BUSY_TIMEOUT})
    sa.event.listen(read, 'connect', _sqlite_on_connect)
    sa.event.listen(read, 'begin', _sqlite_on_begin)
    return read


def make_engine(url, echo=False):
    """Return ``(engine, lock)`` for a SQLAlchemy URL.

    SQLite files run in WAL mode with ``synchronous=NORMAL`` (a committed
    transaction survives ``kill -9``), a busy timeout, and connections
    usable from any thread; their directory is created. ``sqlite://`` (in
    memory) shares one connection, so ``lock`` is a lock every transaction
    must hold; otherwise it is a no-op context manager.
    """
    url = sa.make_url(url)
    if url.drivername == 'postgresql' and importlib.util.find_spec('psycopg2'):
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; rpcmq's
        # [postgres] extra installs psycopg2.
        url = url.set(drivername='postgresql+psycopg2')
    if url.get_backend_name() != 'sqlite':
        return (sa.create_engine(url, echo=echo, pool_pre_ping=True),
                contextlib.nullcontext())
    kwargs = {'connect_args': {'check_same_thread': False,
                               'timeout': SQLITE_BUSY_TIMEOUT}}
    lock = contextlib.nullcontext()
    if url.database in (None, '', ':memory:'):
        kwargs['poolclass'] = StaticPool
        lock = threading.RLock()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(url.database)),
                    exist_ok=True)
        # SQLite runs one writer at a time anyway; every extra connection
        # only adds its own page cache (up to 2 MB), which made memory grow
        # with the database. Callers queue for these few instead.
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=0,
                      pool_timeout=SQLITE_BUSY_TIMEOUT)
    engine = sa.create_engine(url, echo=echo, **kwargs)
    sa.event.listen(engine, 'connect', _sqlite_on_connect)
    sa.event.listen(engine, 'begin', _sqlite_on_begin)
    return engine, lock
