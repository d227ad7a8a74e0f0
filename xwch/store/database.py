"""The one object that talks to the database, always off the reactor thread.

All writes go through a single dedicated thread, in the order they were asked for: the
coordinator applies a change to its memory, queues its write, and acknowledges the request only
when the write has committed, so the store never runs behind what was acknowledged and never
sees two writes of the coordinator race each other. Reads use a small second pool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

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
    return sa.create_engine(url, pool_pre_ping=True)


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
        """Run ``fn(conn, *args)`` in one transaction on the writer thread."""
        return deferToThreadPool(
            self._reactor, self._writer, self._in_transaction, fn, *args, **kwargs
        )

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` in one transaction on a reader thread."""
        return deferToThreadPool(
            self._reactor, self._readers, self._in_transaction, fn, *args, **kwargs
        )

    def _in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)
