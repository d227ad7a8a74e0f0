"""Database URLs the store's tests run against: SQLite always, PostgreSQL where one answers."""

from __future__ import annotations

import os
import secrets
import tempfile
import unittest
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import sqlalchemy as sa

from xwch.store.database import Database

POSTGRES_ADMIN_URL = os.environ.get(
    "XWCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_available() -> str | None:
    """None if PostgreSQL answers at POSTGRES_ADMIN_URL, else why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as e:
        return f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {type(e).__name__}"
    finally:
        engine.dispose()


def postgres_or_skip() -> None:
    """Skip the calling test where no PostgreSQL answers, except in CI (``CI`` set), where a
    PostgreSQL server is always there: a test skipped for its absence would hide that the store
    was never tested against it, so it fails instead."""
    why = postgres_available()
    if why is None:
        return
    if os.environ.get("CI"):
        raise AssertionError(f"{why}; CI must test the store against PostgreSQL")
    raise unittest.SkipTest(why)


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of ``backend`` that disappears afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    name = "xwch_test_" + secrets.token_hex(6)
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def threaded_database(test: unittest.TestCase, backend: str) -> Database:
    """A real :class:`Database` (threads and all, under the test's reactor) on a fresh database
    of ``backend``, stopped and dropped when the test ends; not started, so that the test may
    prepare its tables first."""
    from twisted.internet import reactor

    stack = ExitStack()
    test.addCleanup(stack.close)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    url = stack.enter_context(fresh_database(backend, folder))
    db = Database(reactor, url)  # type: ignore[arg-type]
    stack.callback(db.stop)
    return db
