"""The writer thread's group commit, on SQLite and (where one answers) PostgreSQL.

Runs the real :class:`Database`, threads and all, under trial's reactor.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.backends import postgres_or_skip, threaded_database
from xwch.store.database import register_merge

_metadata = sa.MetaData()
_rows = sa.Table(
    "scratch_rows",
    _metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seen_before", sa.Integer, nullable=False),
)


def _insert_thd(conn: sa.Connection, n: int) -> int:
    """Insert row ``n``, noting how many rows it found: proof of the order of the writes."""
    seen = conn.execute(sa.select(sa.func.count()).select_from(_rows)).scalar_one()
    conn.execute(_rows.insert().values(n=n, seen_before=seen))
    return n


def _insert_when_released_thd(conn: sa.Connection, n: int, release: threading.Event) -> int:
    """Insert row ``n`` once the test says so: a commit that lasts while more writes are asked."""
    if not release.wait(30):
        raise TimeoutError("the test never released the write")
    return _insert_thd(conn, n)


def _insert_many_thd(conn: sa.Connection, *ns: int) -> None:
    """Insert rows ``ns`` in one statement; consecutive calls merge (see below)."""
    seen = conn.execute(sa.select(sa.func.count()).select_from(_rows)).scalar_one()
    conn.execute(_rows.insert(), [{"n": n, "seen_before": seen} for n in ns])
    _calls.append(ns)


_calls: list[tuple[int, ...]] = []


def _merge_inserts(calls: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """Merged unless a call asks for 13, standing for calls that must not be merged."""
    merged = tuple(n for call in calls for n in call)
    return None if 13 in merged else merged


register_merge(_insert_many_thd, _merge_inserts)


def _rows_thd(conn: sa.Connection) -> list[tuple[int, int]]:
    return [(r.n, r.seen_before) for r in conn.execute(sa.select(_rows).order_by(_rows.c.n))]


class _GroupCommitTests:
    backend = "sqlite"

    def setUp(self) -> None:
        self.db = threaded_database(self, self.backend)  # type: ignore[arg-type]
        _metadata.create_all(self.db.engine)
        self.db.start()
        self.commits = 0

        def counted(_conn: object) -> None:
            self.commits += 1

        sa.event.listen(self.db.engine, "commit", counted)

    async def test_writes_asked_in_one_turn_share_one_commit(self) -> None:
        writes = [self.db.write(_insert_thd, n) for n in range(50)]
        results = await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual([value for _ok, value in results], list(range(50)))
        test.assertEqual(self.commits, 1)
        # In the order asked: each write saw every earlier one.
        test.assertEqual(await self.db.read(_rows_thd), [(n, n) for n in range(50)])

    async def test_writes_asked_during_a_commit_share_the_next_one(self) -> None:
        release = threading.Event()
        first = self.db.write(_insert_when_released_thd, 0, release)
        # The turn ends: the first write's group goes to the writer thread and waits there.
        await deferLater(reactor, 0, lambda: None)
        writes = [self.db.write(_insert_thd, n) for n in range(1, 50)]
        release.set()
        results = await DeferredList([first, *writes], fireOnOneErrback=True, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual([value for _ok, value in results], list(range(50)))
        # The first went alone; the 49 asked while it committed went together.
        test.assertEqual(self.commits, 2)
        test.assertEqual(await self.db.read(_rows_thd), [(n, n) for n in range(50)])

    async def test_a_failing_write_fails_alone(self) -> None:
        await self.db.write(_insert_thd, 7)
        # 7 again breaks the primary key: the group it is in is rolled back and run write by
        # write, so only that one fails.
        writes = [self.db.write(_insert_thd, n) for n in (1, 2, 7, 3)]
        results = await DeferredList(writes, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual([ok for ok, _value in results], [True, True, False, True])
        failure = results[2][1]
        test.assertTrue(failure.check(sa.exc.IntegrityError))
        stored = await self.db.read(_rows_thd)
        test.assertEqual([n for n, _seen in stored], [1, 2, 3, 7])

    async def test_consecutive_mergeable_writes_run_as_one_call(self) -> None:
        _calls.clear()
        writes = [
            self.db.write(_insert_thd, 1),
            self.db.write(_insert_many_thd, 2),
            self.db.write(_insert_many_thd, 3, 4),
            self.db.write(_insert_thd, 5),
            self.db.write(_insert_many_thd, 6),
        ]
        results = await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual([value for _ok, value in results], [1, None, None, 5, None])
        # 2 and 3, 4 merged; 6, after another write, on its own.
        test.assertEqual(_calls, [(2, 3, 4), (6,)])
        test.assertEqual(self.commits, 1)

    async def test_writes_that_must_not_merge_run_in_turn(self) -> None:
        _calls.clear()
        writes = [self.db.write(_insert_many_thd, n) for n in (12, 13, 14)]
        await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(_calls, [(12,), (13,), (14,)])

    async def test_a_write_after_a_group_goes_at_once(self) -> None:
        await self.db.write(_insert_thd, 1)
        await self.db.write(_insert_thd, 2)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(self.commits, 2)


class SQLiteGroupCommitTests(_GroupCommitTests, TestCase):
    backend = "sqlite"


class PostgresGroupCommitTests(_GroupCommitTests, TestCase):
    backend = "postgresql"

    def setUp(self) -> None:
        postgres_or_skip()
        super().setUp()
