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
    conn: sa.Connection, statement: sa.Insert | sa.Update, rows: Sequence[Mapping[str, Any]]
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
    all sent before it. Elsewhere, nothing changes."""
    driver = conn.connection.driver_connection if conn.dialect.name == "postgresql" else None
    if driver is None or not hasattr(driver, "pipeline"):
        yield
        return
    with _as_sqlalchemy_errors(conn, "(pipeline)"), driver.pipeline():
        yield


@contextmanager
def _as_sqlalchemy_errors(conn: sa.Connection, sql: str) -> Iterator[None]:
    """The driver's errors as SQLAlchemy's (IntegrityError, OperationalError...), as callers
    expect of any statement."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as e:
        raise sa.exc.DBAPIError.instance(sql, None, e, dbapi.Error) from e


@functools.cache
def _driver_sql(
    statement: sa.Insert | sa.Update, dialect: sa.Dialect
) -> tuple[str, tuple[str, ...] | None]:
    """The SQL of ``statement`` for ``dialect``, and the order of its parameters' names
    (None for a driver that takes them by name)."""
    compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup
    return str(compiled), None if order is None else tuple(order)
