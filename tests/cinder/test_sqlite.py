"""The stack's sqlite plugin (scripts/stack-sqlite) under oslo.db, as the services use it.

Two processes' transactions on one sqlite file, the way Cinder writes: a transaction reads,
then writes, while another one holds the write lock. With oslo.db's plain (deferred) BEGIN the
second write fails at once with "database is locked" whatever the busy timeout (the control);
with the plugin it waits for the first transaction and both commit. Run by tests/cinder/run.sh
with the stack's venv (SQLAlchemy, oslo.db and the plugin installed there).
"""

import os
import sqlite3
import tempfile
import threading
import time
import unittest

import sqlalchemy
from oslo_db.sqlalchemy import engines

HOLD = 0.5


class ImmediateSqlite(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix='ember-stack-sqlite-')
        self.path = os.path.join(self.dir.name, 'db.sqlite')

    def tearDown(self):
        self.dir.cleanup()

    def _engine(self, plugin):
        query = '?plugin=ember_stack_sqlite&timeout=30' if plugin else '?timeout=30'
        eng = engines.create_engine('sqlite:///%s%s' % (self.path, query), max_retries=0)
        with eng.begin() as c:
            c.exec_driver_sql('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER)')
            c.exec_driver_sql('INSERT OR IGNORE INTO t VALUES (1, 0)')
        return eng

    def _race(self, eng):
        """A holds the write lock for HOLD s; B reads, then writes meanwhile. B's outcome."""
        holding, result = threading.Event(), {}

        def a():
            with eng.begin() as c:
                c.exec_driver_sql('UPDATE t SET n = n + 1')
                holding.set()
                time.sleep(HOLD)

        def b():
            holding.wait()
            t0 = time.monotonic()
            try:
                with eng.begin() as c:
                    n = c.exec_driver_sql('SELECT n FROM t').scalar()
                    c.exec_driver_sql('UPDATE t SET n = ?', (n + 1,))
                result['ok'] = True
            except sqlalchemy.exc.OperationalError as e:
                result['error'] = e
            result['waited'] = time.monotonic() - t0

        ts = [threading.Thread(target=f) for f in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        with eng.connect() as c:
            result['n'] = c.exec_driver_sql('SELECT n FROM t').scalar()
        return result

    def test_deferred_begin_fails_without_waiting(self):
        r = self._race(self._engine(plugin=False))
        self.assertIn('error', r, 'the control raced differently: %r' % r)
        self.assertIn('database is locked', str(r['error']))
        self.assertLess(r['waited'], HOLD, 'the busy timeout was not what failed')
        self.assertEqual(r['n'], 1)

    def test_plugin_waits_for_the_lock(self):
        eng = self._engine(plugin=True)
        r = self._race(eng)
        self.assertNotIn('error', r)
        self.assertGreaterEqual(r['waited'], HOLD * 0.5)
        # Both increments landed: B read after A committed.
        self.assertEqual(r['n'], 2)
        con = sqlite3.connect(self.path)
        try:
            self.assertEqual(con.execute('PRAGMA journal_mode').fetchone()[0], 'wal')
        finally:
            con.close()

    def test_many_writers(self):
        eng = self._engine(plugin=True)
        errors = []

        def work():
            for _ in range(50):
                try:
                    with eng.begin() as c:
                        n = c.exec_driver_sql('SELECT n FROM t').scalar()
                        c.exec_driver_sql('UPDATE t SET n = ?', (n + 1,))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(e)

        ts = [threading.Thread(target=work) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        with eng.connect() as c:
            self.assertEqual(c.exec_driver_sql('SELECT n FROM t').scalar(), 300)


if __name__ == '__main__':
    unittest.main(verbosity=2)
