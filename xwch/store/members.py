"""The coordinators sharing a store: who they are, where they answer, when each was last heard.

Every time here is the database's clock (on PostgreSQL ``clock_timestamp()``), read in the same
statement that compares it: members whose clocks differ by seconds still agree on who is silent.
SQLite has one member at most (see ``coordinator/store_lock.py``), whose own clock is then the
only one: the caller's ``now`` stands in for the database's.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from xwch.store.schema import coordinators

# A member lost for this many leases is forgotten (its row deleted): the table shows recent
# losses, not every coordinator that ever ran.
FORGET_AFTER_LEASES = 360


@dataclass(frozen=True)
class MemberRecord:
    id: str
    url: str
    started: float
    last_heard: float
    workers: int
    running: int
    live: bool


def database_now_thd(conn: sa.Connection, now: float) -> float:
    """The database's clock in Unix seconds; ``now`` where the database is the process's own."""
    if conn.dialect.name == "postgresql":
        return float(
            conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )
    return now


def renew_thd(
    conn: sa.Connection,
    member: str,
    url: str,
    workers: int,
    running: int,
    lease: float,
    now: float,
) -> float:
    """This member is alive (joining if it has no row); the database time of the renewal.

    Members lost for FORGET_AFTER_LEASES leases are forgotten meanwhile.
    """
    heard = database_now_thd(conn, now)
    # By keyword: the column running counts attempts, it holds no state.
    values = dict(url=url, last_heard=heard, workers=workers, running=running)
    updated = conn.execute(
        coordinators.update().where(coordinators.c.id == member).values(**values)
    ).rowcount
    if not updated:
        conn.execute(coordinators.insert().values(id=member, started=heard, **values))
    conn.execute(
        coordinators.delete().where(coordinators.c.last_heard < heard - lease * FORGET_AFTER_LEASES)
    )
    return heard


def leave_thd(conn: sa.Connection, member: str) -> None:
    """A member stopping cleanly: gone at once, not after its lease."""
    conn.execute(coordinators.delete().where(coordinators.c.id == member))


def members_thd(conn: sa.Connection, lease: float, now: float) -> list[MemberRecord]:
    """Every member, live ones first (oldest first), then the lost."""
    heard_now = database_now_thd(conn, now)
    rows = conn.execute(sa.select(coordinators)).all()
    members = [
        MemberRecord(
            id=r.id,
            url=r.url,
            started=r.started,
            last_heard=r.last_heard,
            workers=r.workers,
            running=r.running,
            live=r.last_heard >= heard_now - lease,
        )
        for r in rows
    ]
    return sorted(members, key=lambda m: (not m.live, m.started, m.id))
