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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from xwch.errors import XwchError
from xwch.store.driver import execute_plain, expect_refusal, in_pipeline
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
        """The fence, once per transaction: several changes committed together (the store
        groups them) need one check, whose row lock lasts until the commit."""
        _check_once_thd(conn, self, lambda: self.check_each_time_thd(conn, now))

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def check_each_time_thd(self, conn: sa.Connection, now: float) -> None:
        if in_pipeline(conn):
            self._send_check_thd(conn)
        else:
            check_held_thd(conn, self.group, self.member, self.epoch, now)

    def _send_check_thd(self, conn: sa.Connection) -> None:
        """The check sent ahead of the statements it guards, its answer not awaited: on
        PostgreSQL inside a pipeline, where waiting for it would cost a round trip of its own
        (of the four a group commit took, with BEGIN, the statements and COMMIT). Refused, it
        fails in the server, so the statements after it and the COMMIT are skipped, and its
        error is raised as :class:`NotHeld`. It locks the group's row like check_held_thd."""
        expect_refusal(
            conn,
            _DIVISION_BY_ZERO,
            NotHeld(f"group {self.group} is not held by {self.member} at epoch {self.epoch}"),
        )
        execute_plain(
            conn,
            _REFUSED_UNLESS_HELD,
            [{"group": self.group, "member": self.member, "epoch": self.epoch}],
        )


@dataclass(frozen=True)
class Fences:
    """The fences of every group a member holds: its changes stand only while it holds them
    all (one member's managers serve the jobs and workers of all its groups together; losing
    any of them, it rebuilds them from the store for those it still holds)."""

    fences: tuple[Fence, ...]

    @classmethod
    def of(cls, member: str, held: Mapping[str, int]) -> Fences:
        # In the order of the groups: two members checking overlapping sets lock rows alike.
        return cls(tuple(Fence(g, member, held[g]) for g in sorted(held)))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(f.group for f in self.fences)

    def check_thd(self, conn: sa.Connection, now: float) -> None:
        def check_all() -> None:
            for fence in self.fences:
                fence.check_each_time_thd(conn, now)

        _check_once_thd(conn, self, check_all)


def _check_once_thd(conn: sa.Connection, fence: object, check: Callable[[], None]) -> None:
    """``check()``, once per transaction: several changes committed together (the store
    groups them) need one check, whose row locks last until the commit."""
    transaction = conn.get_transaction()
    checked = conn.info.get(_CHECKED)
    if checked is not None and checked[0] is transaction and checked[1] == fence:
        return
    check()
    conn.info[_CHECKED] = (transaction, fence)


# Where a connection remembers the transaction its fence was checked in.
_CHECKED = "xwch_fence_checked"

# The fence as a statement that fails unless the group is held: one over the number of rows
# that say it is (and are locked until the transaction ends). SQL has no statement that
# raises an error of one's choosing: a division by zero is the one error this can raise, and
# no other statement of a change divides. (A CASE raising a cast's error would not do: the
# planner may work out a constant branch, and fail, before looking at a single row.)
_DIVISION_BY_ZERO = "22012"
_HELD_ROWS = (
    sa.select(sa.literal_column("1"))
    .where(
        group_locks.c.id == sa.bindparam("group"),
        group_locks.c.holder == sa.bindparam("member"),
        group_locks.c.epoch == sa.bindparam("epoch"),
    )
    .with_for_update()
    .subquery("held")
)
_REFUSED_UNLESS_HELD = sa.select(sa.literal_column("1") / sa.func.count()).select_from(_HELD_ROWS)


@dataclass(frozen=True)
class GroupLock:
    id: str
    holder: str | None
    epoch: int
    # Whether the holder's lease still runs (by the database's clock).
    held: bool
    # Seconds until the lease runs out (None: no holder), by the database's clock.
    expires_in: float | None = None


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
            expires_in=None if r.holder is None or r.expires is None else r.expires - heard_now,
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
    """The fence: raise :class:`NotHeld` unless ``member`` holds ``group`` at ``epoch``.
    Called in the transaction of a change, it locks the group's row until that transaction
    ends (on PostgreSQL), so no other member takes the group meanwhile.

    A lease run out does not refuse the change by itself: until another member takes the
    group (which raises its epoch), its holder is still the only one writing for it. A holder
    whose renewals waited behind a long write (a job of 150,000 tasks stored in one
    transaction takes 20 s) carries on, instead of dropping its memory and loading it all
    again; once another took the group, its changes are refused."""
    query = sa.select(group_locks.c.id).where(
        group_locks.c.id == group,
        group_locks.c.holder == member,
        group_locks.c.epoch == epoch,
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    if conn.execute(query).first() is None:
        raise NotHeld(f"group {group} is not held by {member} at epoch {epoch}")


# What a change may be conditioned on: one group's fence, or those of all a member holds.
Fencing = Fence | Fences
