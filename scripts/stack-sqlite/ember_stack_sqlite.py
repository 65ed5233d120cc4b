"""SQLAlchemy plugin for the sqlite databases of scripts/cinder-stack.sh.

Named in the database URL (``sqlite:////path?plugin=ember_stack_sqlite&timeout=60``), it makes
several processes (cinder-api, cinder-scheduler, two cinder-volume backends) share one sqlite
file without "database is locked" failures:

- WAL journal: readers never block the writer, nor the writer readers (set once, on the first
  connection to a new file; the mode is stored in the file).
- ``BEGIN IMMEDIATE``: oslo.db turns pysqlite's own transaction handling off and emits a plain
  (deferred) ``BEGIN`` itself. A deferred transaction takes its snapshot at its first read and
  asks for the write lock only at its first write, and most of Cinder's writer transactions
  read first (``volume_update_all_by_service``, ``conditional_update``, quota reservations,
  ``service_update`` ...). SQLite never waits for a lock that a transaction already reading
  needs (that could deadlock): the write fails at once with SQLITE_BUSY (another process holds
  the write lock) or SQLITE_BUSY_SNAPSHOT (another process committed after this one's read),
  whatever the busy timeout. ``BEGIN IMMEDIATE`` takes the write lock as the transaction
  starts, where the busy timeout (``timeout=`` in the URL, pysqlite's default 5 s) applies:
  transactions queue instead of failing. Every transaction is made immediate, since oslo.db's
  readers and writers share one engine and nothing tells them apart at ``BEGIN``.

The begin hook uses oslo.db's own marker (``conn.info["in_transaction"]``), which its listener
checks before emitting ``BEGIN`` and clears on commit and rollback; this plugin's listeners are
registered when the engine is created, before oslo.db adds its own, so they run first.
"""

from sqlalchemy import event
from sqlalchemy.engine import CreateEnginePlugin

MARKER = 'in_transaction'


class ImmediateSqlite(CreateEnginePlugin):
    """WAL and BEGIN IMMEDIATE on sqlite engines; other dialects are left alone."""

    def update_url(self, url):
        # No URL parameters of its own (SQLAlchemy drops `plugin=` itself).
        return url

    def engine_created(self, engine):
        if engine.dialect.name != 'sqlite':
            return

        @event.listens_for(engine, 'connect')
        def _connect(dbapi_con, _record):
            # Transactions are ours (as oslo.db does): no implicit BEGIN/COMMIT by pysqlite.
            dbapi_con.isolation_level = None
            mode = dbapi_con.execute('PRAGMA journal_mode').fetchone()[0]
            if mode.lower() not in ('wal', 'memory'):
                dbapi_con.execute('PRAGMA journal_mode=WAL')

        @event.listens_for(engine, 'begin')
        def _begin(conn):
            if MARKER not in conn.info:
                conn.exec_driver_sql('BEGIN IMMEDIATE')
                conn.info[MARKER] = True

        @event.listens_for(engine, 'commit')
        @event.listens_for(engine, 'rollback')
        def _end(conn):
            conn.info.pop(MARKER, None)
