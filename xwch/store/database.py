"""The one object that talks to the database, always off the reactor thread.

All writes go through a single dedicated thread, in the order they were asked for: the
coordinator applies a change to its memory, queues its write, and acknowledges the request only
when the write has committed, so the store never runs behind what was acknowledged and never
sees two writes of the coordinator race each other. Reads use a small second pool.

Writes are committed in groups: those asked for in the same turn of the reactor go together,
and those asked for while a commit is under way wait for it, then go together in the next
transaction. Under load that is one transaction, one hop to the writer thread and one wake-up
of the reactor for many writes (on trivial tasks each hop cost about as much as the write
itself); alone, a write goes at the end of the reactor's turn. A write that fails in a group is
run again alone with each of the others, so it fails alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from xwch.store.driver import one_round_trip
from xwch.store.idle_ping import ping_when_idle
from xwch.store.schema import migrate_thd

T = TypeVar("T")


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'coordinator.sqlite'}"


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we install (extra xwch[postgres]).
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=sa.pool.QueuePool if ":memory:" not in url else sa.pool.StaticPool,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            # WAL: readers never block the writer; NORMAL is durable across process crashes
            # (only a power loss may drop the last commits).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = sa.create_engine(url)
    ping_when_idle(engine)
    return engine


# Write functions whose consecutive calls may be merged into one: fn -> merge(args of each
# call) -> args of the one call, or None when these cannot be (see register_merge).
_MERGES: dict[Callable[..., Any], Callable[[list[tuple[Any, ...]]], tuple[Any, ...] | None]] = {}


def register_merge(
    fn: Callable[..., Any], merge: Callable[[list[tuple[Any, ...]]], tuple[Any, ...] | None]
) -> None:
    """Let consecutive writes of ``fn`` queued together run as one call of ``fn``."""
    _MERGES[fn] = merge


@dataclass
class _Write:
    """One write waiting for its group's commit."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: Deferred[Any] = field(default_factory=Deferred)


# Write functions that read no answer through SQLAlchemy (whose results are empty inside a
# pipeline): a group made only of these is sent in one round trip (see register_pipelined).
_PIPELINED: set[Callable[..., Any]] = set()


def register_pipelined(fn: Callable[..., Any]) -> None:
    """Let groups made only of writes of ``fn`` (and other such functions) go to PostgreSQL
    as one round trip: BEGIN, every statement and COMMIT (driver.one_round_trip). ``fn`` must
    read no answer through SQLAlchemy: ``execute_plain`` and SQLAlchemy statements whose
    results it ignores only."""
    _PIPELINED.add(fn)


# What a write came to: its function's result, or the Failure it raised.
_Outcome = tuple[bool, Any]


class Database:
    """Owns the engine and the threads; runs ``*_thd`` functions and hands back Deferreds."""

    READ_THREADS = 3

    def __init__(self, reactor: IReactorThreads, url: str) -> None:
        self._reactor = reactor
        self.url = url
        self.engine = make_engine(url)
        self._writer = ThreadPool(minthreads=1, maxthreads=1, name="xwch-db-write")
        self._readers = ThreadPool(minthreads=1, maxthreads=self.READ_THREADS, name="xwch-db-read")
        self._started = False
        # Writes asked for while a group is being committed, or earlier in this turn of the
        # reactor; they make the next group.
        self._queued: list[_Write] = []
        # A group is due at the end of this turn, or being committed: new writes just queue.
        self._committing = False
        # Told each group commit's duration (the metrics' histogram listens here).
        self.on_commit: list[Callable[[float], None]] = []

    def start(self) -> None:
        if not self._started:
            self._writer.start()
            self._readers.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._writer.stop()
            self._readers.stop()
            self._started = False
        self.engine.dispose()

    def migrate(self) -> Deferred[int]:
        return self.call_engine(migrate_thd)

    def call_engine(self, fn: Callable[[sa.Engine], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._writer, fn, self.engine)

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` on the writer thread; fires once it has committed.

        It commits all or nothing, possibly in one transaction with other writes queued at the
        same time (never with a failing one), after every write asked for before it.
        """
        write = _Write(fn, args, kwargs)
        self._queued.append(write)
        if not self._committing:
            # Started once this turn of the reactor is over: a request that asks for several
            # writes (a Work Result's results, then the attempts of the work it asks for)
            # commits them in one transaction, with one hop to the writer thread.
            self._committing = True
            cast(IReactorTime, self._reactor).callLater(0, self._commit_next_group)
        return write.done

    def _commit_next_group(self) -> None:
        group, self._queued = self._queued, []
        started = cast(IReactorTime, self._reactor).seconds()
        d = deferToThreadPool(self._reactor, self._writer, self._commit_group_thd, group)
        d.addBoth(self._group_ended, group, started)

    def _group_ended(
        self, outcomes: list[_Outcome] | Failure, group: list[_Write], started: float
    ) -> None:
        elapsed = cast(IReactorTime, self._reactor).seconds() - started
        for listener in self.on_commit:
            listener(elapsed)
        if isinstance(outcomes, Failure):
            # Not a write's failure (those are caught in the thread): the pool's, all fail.
            outcomes = [(False, outcomes)] * len(group)
        for write, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                write.done.callback(value)
            else:
                write.done.errback(value)
        # What was asked for meanwhile, and by the callbacks just run, goes next, together.
        if self._queued:
            cast(IReactorTime, self._reactor).callLater(0, self._commit_next_group)
        else:
            self._committing = False

    def _commit_group_thd(self, group: list[_Write]) -> list[_Outcome]:
        if len(group) > 1:
            try:
                with self._transaction(group) as conn:
                    results = self._run_merged(conn, group)
                return [(True, r) for r in results]
            except Exception:
                pass  # rolled back: each again on its own, below, so only the bad one fails
        outcomes: list[_Outcome] = []
        for w in group:
            try:
                # Its statements' errors may come only with the commit: the outcome after it.
                with self._transaction([w]) as conn:
                    value = w.fn(conn, *w.args, **w.kwargs)
                outcomes.append((True, value))
            except Exception:
                outcomes.append((False, Failure()))
        return outcomes

    def _transaction(self, group: list[_Write]) -> AbstractContextManager[sa.Connection]:
        """The transaction of a group: in one round trip when all its writes allow it."""
        if all(w.fn in _PIPELINED for w in group):
            return one_round_trip(self.engine)
        return self.engine.begin()

    def _run_merged(self, conn: sa.Connection, group: list[_Write]) -> list[Any]:
        """Run a group's writes in order, consecutive ones of a function that knows how to
        merge its calls (a ``merge`` registered for it) as one call; each merged write's
        result is None."""
        results: list[Any] = []
        start = 0
        while start < len(group):
            fn = group[start].fn
            end = start + 1
            merge = _MERGES.get(fn)
            while merge is not None and end < len(group) and group[end].fn is fn:
                end += 1
            run = group[start:end]
            merged = None
            if len(run) > 1 and merge is not None and not any(w.kwargs for w in run):
                merged = merge([w.args for w in run])
            if merged is None:
                results.extend(w.fn(conn, *w.args, **w.kwargs) for w in run)
            else:
                fn(conn, *merged)
                results.extend([None] * len(run))
            start = end
        return results

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` in one transaction on a reader thread."""
        return deferToThreadPool(
            self._reactor, self._readers, self._in_transaction, fn, *args, **kwargs
        )

    def _in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)
