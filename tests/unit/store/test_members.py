"""The coordinators' membership in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from xwch.store.database import make_engine
from xwch.store.members import FORGET_AFTER_LEASES, members_thd, renew_thd
from xwch.store.schema import SCHEMA_VERSION, coordinators, current_version_thd, migrate_thd

LEASE = 10.0


def test_members_join_renew_and_are_lost_when_silent(db_url: str) -> None:
    """A member appears on its first renewal, stays live while renewing, is lost when silent
    past the lease, and is forgotten long after."""
    engine = make_engine(db_url)
    migrate_thd(engine)
    with engine.begin() as conn:
        heard = renew_thd(conn, "c-1", "http://c1:8750", 3, 2, LEASE, 1000.0)
        renew_thd(conn, "c-2", "http://c2:8750", 0, 0, LEASE, 1000.0)
        renew_thd(conn, "c-1", "http://c1:8750", 4, 1, LEASE, 1001.0)
    with engine.begin() as conn:
        members = members_thd(conn, LEASE, 1002.0)
    assert [(m.id, m.live, m.workers, m.running) for m in members] == [
        ("c-1", True, 4, 1),
        ("c-2", True, 0, 0),
    ]
    # c-2 silent past the lease (by the database's clock, whichever the backend).
    with engine.begin() as conn:
        conn.execute(
            coordinators.update()
            .where(coordinators.c.id == "c-2")
            .values(last_heard=heard - 2 * LEASE)
        )
        members = members_thd(conn, LEASE, 1002.0)
    assert [(m.id, m.live) for m in members] == [("c-1", True), ("c-2", False)]
    with engine.begin() as conn:
        conn.execute(
            coordinators.update()
            .where(coordinators.c.id == "c-2")
            .values(last_heard=heard - (FORGET_AFTER_LEASES + 1) * LEASE)
        )
        renew_thd(conn, "c-1", "http://c1:8750", 4, 1, LEASE, 1002.0)
        assert [m.id for m in members_thd(conn, LEASE, 1002.0)] == ["c-1"]
    engine.dispose()


def test_the_database_clock_decides_on_postgresql(db_url: str) -> None:
    """On PostgreSQL a member's own clock does not matter: a renewal is stamped by the
    database, so a member whose clock is an hour off is still live."""
    engine = make_engine(db_url)
    migrate_thd(engine)
    with engine.begin() as conn:
        renew_thd(conn, "c-1", "http://c1:8750", 0, 0, LEASE, 1000.0)
        [member] = members_thd(conn, LEASE, 1000.0 + 3600.0)
        expected = conn.dialect.name == "postgresql"
        assert member.live is expected
        assert conn.execute(sa.select(sa.func.count()).select_from(coordinators)).scalar() == 1
    engine.dispose()


def test_coordinators_starting_together_migrate_the_store_once(db_url: str) -> None:
    """Several members started at once on a new store: each waits for the one migrating."""
    if db_url.startswith("sqlite"):
        pytest.skip("one coordinator per SQLite store (coordinator/store_lock.py)")
    engines = [make_engine(db_url) for _ in range(3)]
    with ThreadPoolExecutor(len(engines)) as pool:
        befores = sorted(pool.map(migrate_thd, engines))
    assert befores[0] == 0 and all(b in (0, SCHEMA_VERSION) for b in befores)
    with engines[0].begin() as conn:
        assert current_version_thd(conn) == SCHEMA_VERSION
    for engine in engines:
        engine.dispose()
