"""PostgreSQL connections of the pool are checked before use once they have been idle a while:
one the server dropped meanwhile is replaced unseen; one just used is not checked again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.backends import POSTGRES_ADMIN_URL, fresh_database, postgres_or_skip
from xwch.store.idle_ping import PING_AFTER_IDLE, ping_when_idle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(tmp_path: Path, clock: FakeClock) -> Iterator[sa.Engine]:
    postgres_or_skip()
    with fresh_database("postgresql", tmp_path) as url:
        engine = sa.create_engine(url, pool_size=1)
        ping_when_idle(engine, now=clock)
        yield engine
        engine.dispose()


def backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def drop_connection(pid: int) -> None:
    """The server ends this connection (as a restart would)."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    admin.dispose()


def test_a_connection_dropped_while_idle_is_replaced(engine: sa.Engine, clock: FakeClock) -> None:
    pid = backend_pid(engine)
    drop_connection(pid)
    clock.now += PING_AFTER_IDLE + 0.1
    assert backend_pid(engine) != pid


def test_a_connection_used_a_moment_ago_is_not_pinged(engine: sa.Engine, clock: FakeClock) -> None:
    """No round trip before a busy writer's next transaction: a connection the server dropped
    within that moment fails the transaction that uses it (as it would had it dropped just
    after a ping), and the pool replaces it."""
    pid = backend_pid(engine)
    drop_connection(pid)
    clock.now += PING_AFTER_IDLE / 2
    with pytest.raises(sa.exc.OperationalError):
        backend_pid(engine)
    assert backend_pid(engine) != pid
