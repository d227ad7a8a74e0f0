"""The locks of the logical groups of workers: which coordinator holds each, until when, and
the epoch that fences a holder that lost it.

A group is held by one member at a time, under a lease it renews. Taking a group (free, or its
lease run out) is one conditional UPDATE that also raises its epoch: two members trying at
once, one wins. Every later change a holder makes for its group is conditioned on the epoch it
took the group at (:func:`check_held_thd` in the same transaction), so a member that lost the
group while paused, and does not know it yet, has its changes refused. Times are the database's
clock (see ``members.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xwch.errors import XwchError
from xwch.store.members import database_now_thd
from xwch.store.schema import group_locks


class NotHeld(XwchError):
    """A change for a group whose lock this member no longer holds (at that epoch)."""


@dataclass(frozen=True)
class Fence:
    """What a holder's changes are conditioned on: ``member`` holds ``group`` at ``epoch``."""

    group: str
    member: str
    epoch: int

    def check_thd(self, conn: sa.Connection, now: float) -> None:
        check_held_thd(conn, self.group, self.member, self.epoch, now)


@dataclass(frozen=True)
class GroupLock:
    id: str
    holder: str | None
    epoch: int
    # Whether the holder's lease still runs (by the database's clock).
    held: bool


def nothing_thd(_conn: sa.Connection) -> None:
    """A write that writes nothing: it commits after every write asked for before it."""


def ensure_groups_thd(conn: sa.Connection, ids: Iterable[str]) -> None:
    """Make these groups exist (free); those already there are left as they are."""
    rows = [{"id": i, "epoch": 0} for i in ids]
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(group_locks).values(rows).on_conflict_do_nothing())


def locks_thd(conn: sa.Connection, now: float) -> list[GroupLock]:
    """Every group's lock, by id."""
    heard_now = database_now_thd(conn, now)
    rows = conn.execute(sa.select(group_locks).order_by(group_locks.c.id)).all()
    return [
        GroupLock(
            id=r.id,
            holder=r.holder,
            epoch=r.epoch,
            held=r.holder is not None and r.expires is not None and r.expires >= heard_now,
        )
        for r in rows
    ]


def claim_thd(conn: sa.Connection, group: str, member: str, lease: float, now: float) -> int | None:
    """Take ``group`` if it is free or its lease ran out: its new epoch; None if it is held."""
    heard_now = database_now_thd(conn, now)
    free = sa.or_(
        group_locks.c.holder.is_(None),
        group_locks.c.expires.is_(None),
        group_locks.c.expires < heard_now,
    )
    taken = conn.execute(
        group_locks.update()
        .where(group_locks.c.id == group, free)
        .values(holder=member, epoch=group_locks.c.epoch + 1, expires=heard_now + lease)
        .returning(group_locks.c.epoch)
    ).scalar()
    return None if taken is None else int(taken)


def renew_thd(
    conn: sa.Connection, member: str, held: Mapping[str, int], lease: float, now: float
) -> set[str]:
    """Renew the lease of every group in ``held`` (group -> epoch); those still held.

    A group missing from the answer was taken by another member meanwhile (this one was
    silent past its lease): it must be let go at once.
    """
    heard_now = database_now_thd(conn, now)
    kept = set()
    for group, epoch in held.items():
        renewed = conn.execute(
            group_locks.update()
            .where(
                group_locks.c.id == group,
                group_locks.c.holder == member,
                group_locks.c.epoch == epoch,
            )
            .values(expires=heard_now + lease)
        ).rowcount
        if renewed:
            kept.add(group)
    return kept


def release_thd(conn: sa.Connection, group: str, member: str, epoch: int) -> None:
    """Let ``group`` go (for another member to take at once), if still held at ``epoch``."""
    conn.execute(
        group_locks.update()
        .where(
            group_locks.c.id == group,
            group_locks.c.holder == member,
            group_locks.c.epoch == epoch,
        )
        .values(holder=None, expires=None)
    )


def check_held_thd(conn: sa.Connection, group: str, member: str, epoch: int, now: float) -> None:
    """The fence: raise :class:`NotHeld` unless ``member`` holds ``group`` at ``epoch`` with
    its lease running. Called in the transaction of a change, it locks the group's row until
    that transaction ends (on PostgreSQL), so no other member takes the group meanwhile."""
    heard_now = database_now_thd(conn, now)
    query = sa.select(group_locks.c.id).where(
        group_locks.c.id == group,
        group_locks.c.holder == member,
        group_locks.c.epoch == epoch,
        group_locks.c.expires >= heard_now,
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    if conn.execute(query).first() is None:
        raise NotHeld(f"group {group} is not held by {member} at epoch {epoch}")
