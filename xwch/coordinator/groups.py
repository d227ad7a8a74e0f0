"""The logical groups of workers, spread evenly over the live coordinators of a store.

Every ``lease / ROUNDS_PER_LEASE`` seconds a member renews the locks it holds (letting go at
once of any another member took meanwhile: it was silent past its lease), then compares what it
holds with its fair share of the groups among the live members, ordered by id: it releases what
it holds beyond its share, and takes free groups (or those whose holder's lease ran out) up to
it. Every member computes the same shares from the same table, so the spread settles within a
round or two of a member joining or dying, and no group ever has two holders: taking one is a
conditional update in the store (``store/group_locks.py``). A member that lets a group go, or
joins or leaves, announces it (``store/notices.py``) and the others run a round at once: a
member stopped cleanly hands its groups over in milliseconds, not at the next round.

There are as many groups as ``--groups``, or, left unset, one per live member so that each
can hold one; groups, once made, stay. Each member serves the jobs and workers of the groups it
holds (``serving.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.coordinator.members import Membership
from xwch.store import group_locks
from xwch.store.database import Database
from xwch.store.group_locks import GroupLock
from xwch.store.notices import GROUPS, MEMBERS, Notices


@dataclass(frozen=True)
class Plan:
    """What a member should do this round: groups to take, groups to let go."""

    claim: tuple[str, ...]
    release: tuple[str, ...]


def group_ids(count: int) -> list[str]:
    return [f"g{n}" for n in range(1, count + 1)]


def fair_share(groups: int, live: Sequence[str], me: str) -> int:
    """How many of ``groups`` ``me`` should hold: an even split, the first members by id
    taking one more when it does not divide."""
    ordered = sorted(live)
    if me not in ordered:
        return 0
    base, extra = divmod(groups, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def plan(locks: Sequence[GroupLock], live: Sequence[str], me: str) -> Plan:
    """What ``me`` should take and let go, given every lock and the live members.

    A member keeps what it holds as long as the spread stays even within one group: a group
    changing hands stops its holder's work for a moment (with one group and two members, the
    second to arrive must not take the group from the first)."""
    share = fair_share(len(locks), live, me)
    mine = [lock.id for lock in locks if lock.holder == me and lock.held]
    live_set = set(live)
    most = -(-len(locks) // max(len(live_set), 1))
    least = len(locks) // max(len(live_set), 1)
    holding = {member: 0 for member in live_set}
    for lock in locks:
        if lock.held and lock.holder in holding:
            holding[lock.holder] += 1
    someone_short = any(n < least for m, n in holding.items() if m != me)
    keep = max(least, share) if someone_short else most
    if len(mine) > keep:
        return Plan(claim=(), release=tuple(sorted(mine)[keep:]))
    if len(mine) >= share:
        return Plan(claim=(), release=())
    free = _free(locks, live)
    return Plan(claim=tuple(free[: share - len(mine)]), release=())


def _free(locks: Sequence[GroupLock], live: Sequence[str]) -> list[str]:
    """Groups no live member holds."""
    live_set = set(live)
    return [
        lock.id
        for lock in locks
        if not lock.held or lock.holder is None or lock.holder not in live_set
    ]


class GroupLocks(Service):
    """The groups this member holds (group -> epoch), kept to its fair share."""

    log = Logger()

    ROUNDS_PER_LEASE = 3
    # A round soon after another member's lease runs out (it stopped renewing: dead, or
    # frozen), not at the next of the periodic rounds, up to a third of a lease later; and
    # again this soon while groups are free and the spread still counts their holder.
    AFTER_EXPIRY = 0.05
    LOOK_AGAIN = 0.25

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        membership: Membership,
        listening: Callable[[], Deferred[Any]],
        groups: int | None = None,
        notices: Notices | None = None,
    ) -> None:
        self._reactor = reactor
        self._notices = notices
        self._unsubscribe: list[Callable[[], None]] = []
        # A round under way (rounds never overlap), and whether a notice asked for another.
        self._in_round = False
        self._again = False
        self._db = db
        self._membership = membership
        self._listening = listening
        self._configured = groups
        self.held: dict[str, int] = {}
        self._rounds: LoopingCall | None = None
        self._extra: IDelayedCall | None = None
        self._failing = False
        # Told (group, epoch) when this member takes a group, and (group) when it lets one go
        # or finds it taken by another.
        self.on_gained: list[Callable[[str, int], None]] = []
        self.on_lost: list[Callable[[str], None]] = []

    @property
    def lease(self) -> float:
        return self._membership.lease

    def startService(self) -> None:
        super().startService()
        self._listening().addCallbacks(self._start_rounds, lambda _: None)

    def _start_rounds(self, _: object) -> None:
        if not self.running:
            return
        self._rounds = LoopingCall(self._round)
        self._rounds.clock = self._reactor
        # The first round at once: a lone member serves as soon as it listens.
        self._rounds.start(self.lease / self.ROUNDS_PER_LEASE, now=True)
        if self._notices is not None:
            for channel in (GROUPS, MEMBERS):
                self._unsubscribe.append(self._notices.subscribe(channel, self._noticed))

    def round_now(self) -> None:
        """A round at once, not at the next (a change of this member's was refused)."""
        if self._rounds is not None:
            self._round()

    def _noticed(self) -> None:
        """Another member let a group go, or joined or left: a round now, not at the next."""
        if self._rounds is not None:
            self._round()

    def _round(self) -> Deferred[None]:
        if self._in_round:
            self._again = True
            return succeed(None)
        self._in_round = True
        d = ensureDeferred(self.balance())
        d.addCallbacks(self._round_done, self._round_failed)
        d.addBoth(self._round_ended)
        return d

    def _round_ended(self, _: object) -> None:
        self._in_round = False
        if self._again and self._rounds is not None:
            self._again = False
            self._round()

    def _round_done(self, _: object) -> None:
        if self._failing:
            self._failing = False
            self.log.info("groups: rounds work again")

    def _round_failed(self, failure: Failure) -> None:
        # Logged once a series, not raised: a LoopingCall stops for good on an error, and a
        # store restarting fails every round until it is back.
        if not self._failing:
            self._failing = True
            self.log.warn("groups: a round failed: {error}; trying each round", error=failure.value)

    async def balance(self) -> None:
        """One round: renew, then take or let go toward this member's fair share."""
        me, now = self._membership.id, self._reactor.seconds()
        if self.held:
            kept = await self._db.write(group_locks.renew_thd, me, dict(self.held), self.lease, now)
            for group in set(self.held) - kept:
                self.log.warn(
                    "groups: {group} was taken by another member (epoch {epoch} is stale); "
                    "letting it go",
                    group=group,
                    epoch=self.held[group],
                )
                self.let_go(group)
        else:
            # Writes commit in order: past this one, this member's own registration (asked
            # for when it started listening) is in the store for the read below.
            await self._db.write(group_locks.nothing_thd)
        live = [m.id for m in await self._membership.members() if m.live]
        if me not in live:
            return  # not renewed in the store yet: no share until then
        count = self._configured if self._configured is not None else max(1, len(live))
        await self._db.write(group_locks.ensure_groups_thd, group_ids(count))
        locks = await self._db.read(group_locks.locks_thd, now)
        todo = plan(locks, live, me)
        self._watch(locks, me, free_left=len(_free(locks, live)) > len(todo.claim))
        for group in todo.release:
            epoch = self.held[group]
            self.let_go(group)
            await self._db.write(group_locks.release_thd, group, me, epoch)
            self.log.info("groups: let {group} go to even the spread", group=group)
            self._announce_release()
        for group in todo.claim:
            taken = await self._db.write(group_locks.claim_thd, group, me, self.lease, now)
            if taken is not None:
                self.held[group] = taken
                self.log.info("groups: holding {group} (epoch {epoch})", group=group, epoch=taken)
                for gained in list(self.on_gained):
                    gained(group, taken)

    def _watch(self, locks: Sequence[GroupLock], me: str, free_left: bool) -> None:
        """Run a round when another member's lease runs out, if before the next periodic
        round; soon, while groups are left free (their holder's membership lapses a moment
        after its locks)."""
        period = self.lease / self.ROUNDS_PER_LEASE
        lapsing = [
            lock.expires_in
            for lock in locks
            if lock.held and lock.holder != me and lock.expires_in is not None
        ]
        delay = min(lapsing, default=period) + self.AFTER_EXPIRY
        if free_left:
            delay = min(delay, self.LOOK_AGAIN)
        # A live member's lease, renewed every period, runs out more than two periods on.
        if delay > period + self.AFTER_EXPIRY or self._rounds is None:
            return
        if self._extra is not None and self._extra.active():
            if self._extra.getTime() <= self._reactor.seconds() + delay:
                return
            self._extra.cancel()
        self._extra = self._reactor.callLater(delay, self._round)

    def let_go(self, group: str) -> None:
        """Forget ``group`` (taken by another, or given up), and tell who listens."""
        if self.held.pop(group, None) is None:
            return
        for lost in list(self.on_lost):
            lost(group)

    def locks(self) -> Deferred[list[GroupLock]]:
        """Every group's lock, by id."""
        return self._db.read(group_locks.locks_thd, self._reactor.seconds())

    def stopService(self) -> Deferred[None] | None:
        if self.running:
            super().stopService()
        if self._extra is not None and self._extra.active():
            self._extra.cancel()
        self._extra = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._rounds is None:
            return None
        self._rounds.stop()
        self._rounds = None
        return ensureDeferred(self._release_all())

    async def _release_all(self) -> None:
        """Stopping cleanly: every group free at once, not after the lease."""
        held, self.held = self.held, {}
        for group, epoch in held.items():
            await self._db.write(group_locks.release_thd, group, self._membership.id, epoch)
        if held:
            self._announce_release()

    def _announce_release(self) -> None:
        """Tell the others a group is free (a hint: not awaited; lost, it costs a round)."""
        if self._notices is not None:
            self._notices.publish(GROUPS).addErrback(
                lambda f: self.log.warn("groups: no notice sent: {error}", error=f.value)
            )
