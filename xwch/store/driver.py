"""Statements sent to the database driver as SQL compiled once, for the per-task writes.

SQLAlchemy's ``execute`` works out a statement's cache key and processes each row's parameters
on every call; on trivial tasks that Python was a good part of the coordinator's writing time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa


def execute_plain(
    conn: sa.Connection,
    statement: sa.Insert | sa.Update | sa.Select[Any],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """``statement`` once for each of ``rows``, sent as the driver's own SQL.

    For the per-task statements of the store, whose every value is given and plain (text,
    numbers, booleans, bytes, None: nothing for SQLAlchemy to convert, no default to fill in; an
    INSERT's rows name every column). ``statement`` is made once (a module's constant): its SQL
    is kept for each statement and dialect. SQLAlchemy's ``execute`` spent about 36 us of Python a statement here (a cache
    key, each row's parameters processed); the SQL compiled once for the dialect and given to
    the driver, about 10. A task's writes (its attempt's start and end, SQLite, three changes a
    commit) cost about a quarter less CPU: 556, 368 and 388 us before, 445, 299 and 279 after,
    in pairs of runs.
    """
    sql, order = _driver_sql(statement, conn.dialect)
    if conn.dialect.name == "postgresql":
        # Straight to psycopg's cursor: inside pipelined() its statements go without waiting
        # for each other's answers (SQLAlchemy's would wait for each one's description).
        driver = conn.connection.driver_connection
        assert driver is not None
        params: list[Any] = (
            list(rows) if order is None else [tuple(row[n] for n in order) for row in rows]
        )
        with _as_sqlalchemy_errors(conn, sql), driver.cursor() as cursor:
            cursor.executemany(sql, params)
        return
    if order is None:
        conn.exec_driver_sql(sql, list(rows))
    else:
        conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])


@contextmanager
def pipelined(conn: sa.Connection) -> Iterator[None]:
    """On PostgreSQL, the statements of :func:`execute_plain` inside are sent one after the
    other without waiting for the answers, all awaited at the end (psycopg's pipeline mode):
    one round trip instead of one a statement. Anything that reads an answer inside waits for
    all sent before it. Inside another ``pipelined`` (or :func:`one_round_trip`) it adds
    nothing: the outer one awaits the answers. Elsewhere, nothing changes."""
    driver = conn.connection.driver_connection if conn.dialect.name == "postgresql" else None
    if driver is None or not hasattr(driver, "pipeline") or in_pipeline(conn):
        yield
        return
    with _as_sqlalchemy_errors(conn, "(pipeline)"), driver.pipeline():
        yield


def in_pipeline(conn: sa.Connection) -> bool:
    """Whether statements sent on ``conn`` now are pipelined (their answers awaited later)."""
    if conn.dialect.name != "postgresql":
        return False
    pgconn = getattr(conn.connection.driver_connection, "pgconn", None)
    return pgconn is not None and bool(pgconn.pipeline_status)


@contextmanager
def one_round_trip(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction whose BEGIN, the statements :func:`execute_plain` sends inside, and COMMIT
    go to PostgreSQL together and are answered together: one round trip for a whole group
    commit, where psycopg alone sends BEGIN and waits for its answer before the first
    statement, and COMMIT only after the last answer. Whatever reads an answer inside still
    works, at the cost of a round trip. A failed statement or an exception inside rolls the
    whole back: the server skips whatever follows a failed statement, COMMIT included.
    Elsewhere, ``engine.begin()``."""
    with engine.begin() as conn:
        driver = conn.connection.driver_connection if conn.dialect.name == "postgresql" else None
        if driver is None or not hasattr(driver, "pipeline"):
            yield conn
            return
        # In autocommit mode psycopg sends no BEGIN of its own: ours goes in the pipeline.
        driver.autocommit = True
        try:
            with _as_sqlalchemy_errors(conn, "(pipeline)"), driver.pipeline():
                driver.execute("BEGIN")
                yield conn
                driver.execute("COMMIT")
        finally:
            if not driver.closed and driver.info.transaction_status != _IDLE:
                # Failed or interrupted: the transaction block is still open.
                try:
                    driver.execute("ROLLBACK")
                except Exception:
                    # Unusable (the server went away meanwhile): the pool makes a new one. The
                    # error under way is the one to tell.
                    conn.invalidate()
            if not driver.closed:
                driver.autocommit = False


# psycopg's pq.TransactionStatus.IDLE: no transaction block open.
_IDLE = 0


def expect_refusal(conn: sa.Connection, sqlstate: str, refusal: Exception) -> None:
    """A statement sent in this transaction that fails with ``sqlstate`` means ``refusal``,
    raised in its error's place: for a check sent ahead of the statements it guards, whose
    answer is not read but whose failure fails the transaction (see ``Fence.check_thd``)."""
    conn.info[_REFUSAL] = (conn.get_transaction(), sqlstate, refusal)


# Where a connection keeps the refusal expected in its current transaction.
_REFUSAL = "xwch_refusal"


def _refusal(conn: sa.Connection, error: BaseException) -> Exception | None:
    expected = conn.info.get(_REFUSAL)
    if expected is None or expected[0] is not conn.get_transaction():
        return None
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    return expected[2] if getattr(cause, "sqlstate", None) == expected[1] else None  # type: ignore[no-any-return]


@contextmanager
def _as_sqlalchemy_errors(conn: sa.Connection, sql: str) -> Iterator[None]:
    """The driver's errors as SQLAlchemy's (IntegrityError, OperationalError...), as callers
    expect of any statement; an expected refusal (see :func:`expect_refusal`) as itself."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except Exception as e:
        refusal = _refusal(conn, e)
        if refusal is not None:
            raise refusal from e
        if isinstance(e, dbapi.Error):
            raise sa.exc.DBAPIError.instance(sql, None, e, dbapi.Error) from e
        raise


@functools.cache
def _driver_sql(
    statement: sa.Insert | sa.Update | sa.Select[Any], dialect: sa.Dialect
) -> tuple[str, tuple[str, ...] | None]:
    """The SQL of ``statement`` for ``dialect``, and the order of its parameters' names
    (None for a driver that takes them by name)."""
    compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup
    return str(compiled), None if order is None else tuple(order)
