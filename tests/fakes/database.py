"""A :class:`Database` that runs its queries inline, so logic tests stay synchronous.

The SQL is real (an SQLite file in a temporary folder, or PostgreSQL); only the hop to the
database thread is skipped, so ``successResultOf`` sees the result at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from twisted.internet.defer import Deferred, fail, succeed

from xwch.store.database import Database
from xwch.store.schema import migrate_thd

T = TypeVar("T")


class InlineDatabase(Database):
    """Runs every ``*_thd`` function on the calling thread; fails writes on demand."""

    def __init__(self, url: str) -> None:
        super().__init__(reactor=None, url=url)  # type: ignore[arg-type]
        migrate_thd(self.engine)
        self.fail_writes = False
        self.writes = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.engine.dispose()

    def call_engine(self, fn: Callable[[sa.Engine], T]) -> Deferred[T]:
        return succeed(fn(self.engine))

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if self.fail_writes:
            return fail(RuntimeError("the database is down (test)"))
        self.writes += 1
        return self._now(fn, *args, **kwargs)

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self._now(fn, *args, **kwargs)

    def _now(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        # As the real one does: what the query raises comes back as a failed Deferred.
        try:
            return succeed(self._in_transaction(fn, *args, **kwargs))
        except Exception:
            return fail()
