"""Group locks on SQLite and PostgreSQL: one holder at a time, leases, epochs, the fence."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from xwch.store.database import make_engine
from xwch.store.group_locks import (
    Fence,
    NotHeld,
    check_held_thd,
    claim_thd,
    ensure_groups_thd,
    locks_thd,
    release_thd,
    renew_thd,
)
from xwch.store.schema import group_locks, migrate_thd

LEASE = 10.0
NOW = 1000.0


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    migrate_thd(engine)
    with engine.begin() as conn:
        ensure_groups_thd(conn, ["g1", "g2"])
        ensure_groups_thd(conn, ["g1", "g2"])  # again: nothing changes
    yield engine
    engine.dispose()


def expire(engine: sa.Engine, group: str) -> None:
    """The holder's lease ran out (whatever the database's clock says now)."""
    with engine.begin() as conn:
        conn.execute(group_locks.update().where(group_locks.c.id == group).values(expires=0.0))


def test_a_free_group_is_taken_by_one_member_only(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert claim_thd(conn, "g1", "c-1", LEASE, NOW) == 1
        assert claim_thd(conn, "g1", "c-2", LEASE, NOW) is None
        [g1, g2] = locks_thd(conn, NOW)
    assert (g1.holder, g1.epoch, g1.held) == ("c-1", 1, True)
    assert (g2.holder, g2.held) == (None, False)


def test_a_lapsed_lease_hands_the_group_over_with_a_higher_epoch(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        claim_thd(conn, "g1", "c-1", LEASE, NOW)
    expire(engine, "g1")
    with engine.begin() as conn:
        assert claim_thd(conn, "g1", "c-2", LEASE, NOW) == 2
        # The old holder, back from a pause, finds it no longer holds the group.
        assert renew_thd(conn, "c-1", {"g1": 1}, LEASE, NOW) == set()
        assert renew_thd(conn, "c-2", {"g1": 2}, LEASE, NOW) == {"g1"}


def test_the_fence_refuses_a_stale_holders_change(engine: sa.Engine) -> None:
    """A change checked against the epoch its member took the group at is refused once the
    group changed hands, and the transaction it was part of is rolled back whole."""
    with engine.begin() as conn:
        claim_thd(conn, "g1", "c-1", LEASE, NOW)
        check_held_thd(conn, "g1", "c-1", 1, NOW)
    expire(engine, "g1")
    with engine.begin() as conn:
        claim_thd(conn, "g1", "c-2", LEASE, NOW)
    with pytest.raises(NotHeld, match="g1"), engine.begin() as conn:
        conn.execute(group_locks.update().where(group_locks.c.id == "g2").values(holder="x"))
        check_held_thd(conn, "g1", "c-1", 1, NOW)
    with engine.begin() as conn:
        [_, g2] = locks_thd(conn, NOW)
        assert g2.holder is None  # the stale holder's other change did not land
        check_held_thd(conn, "g1", "c-2", 2, NOW)


def test_a_released_group_is_free_at_once(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        claim_thd(conn, "g1", "c-1", LEASE, NOW)
        release_thd(conn, "g1", "c-1", 1)
        assert claim_thd(conn, "g1", "c-2", LEASE, NOW) == 2
        release_thd(conn, "g1", "c-1", 1)  # not the holder any more: changes nothing
        [g1, _] = locks_thd(conn, NOW)
    assert g1.holder == "c-2"


def test_the_fence_is_checked_once_per_transaction(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        epoch = claim_thd(conn, "g1", "c-1", LEASE, NOW)
    assert epoch is not None
    fence = Fence("g1", "c-1", epoch)
    with engine.begin() as conn:
        fence.check_thd(conn, NOW)
        # Taken meanwhile: this transaction holds the row lock on PostgreSQL, so no member
        # could; here the test takes it itself, and the second check of the same
        # transaction does not look again.
        conn.execute(group_locks.update().where(group_locks.c.id == "g1").values(epoch=epoch + 1))
        fence.check_thd(conn, NOW)
    with engine.begin() as conn, pytest.raises(NotHeld):
        fence.check_thd(conn, NOW)


def test_a_holder_whose_lease_ran_out_writes_on_until_another_takes_the_group(
    engine: sa.Engine,
) -> None:
    """Its renewals waited behind a long write: nobody else holds the group meanwhile, so
    its changes stand; once another member took the group, they are refused."""
    with engine.begin() as conn:
        claim_thd(conn, "g1", "c-1", LEASE, NOW)
    expire(engine, "g1")
    with engine.begin() as conn:
        check_held_thd(conn, "g1", "c-1", 1, NOW)
    with engine.begin() as conn:
        assert claim_thd(conn, "g1", "c-2", LEASE, NOW) == 2
    with pytest.raises(NotHeld), engine.begin() as conn:
        check_held_thd(conn, "g1", "c-1", 1, NOW)
