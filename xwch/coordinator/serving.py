"""Several coordinators on one PostgreSQL store: the managers of the groups a member holds.

Each member serves the jobs and the workers of the logical groups it holds (``groups.py``): it
builds its managers from the store for exactly those groups (the same recovery as a restarted
coordinator's, limited to their jobs and workers) and makes every change of tasks and attempts
under the epochs it holds them at (:class:`~xwch.store.group_locks.Fences`), so that the store
refuses the changes of a member that lost a group without knowing it yet (paused past its
lease, say). When the set it holds changes (a member joined or died, or the store refused a
change), it drops its managers, whose memory is no longer the whole truth of its groups, and
builds them again for the groups it holds now; running attempts go on meanwhile and report to
whoever holds their group then.

Requests are sent to the member holding what they are about by ``routing.py``; while a group
has no live holder (its holder died and the lease has not run out), requests about it wait,
so that a member's death costs callers a wait, not an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from xwch.coordinator.groups import GroupLocks
from xwch.coordinator.managers import Managers
from xwch.coordinator.members import Membership
from xwch.store.group_locks import Fences, GroupLock, NotHeld
from xwch.store.placement import FIRST_GROUP


class NoneServing(Exception):
    """No live member holds the group asked for (its holder is dying; its lease runs)."""


class Serving(Service):
    """This member's managers, for the groups it holds; none while it holds none."""

    log = Logger()

    # How often a request about a group with no live holder looks for one.
    LOOK_INTERVAL = 0.25
    # Building from a store that does not answer: again after this, doubling, at most MAX.
    REBUILD_BACKOFF = 0.5
    REBUILD_BACKOFF_MAX = 5.0

    def __init__(
        self,
        reactor: IReactorTime,
        membership: Membership,
        groups: GroupLocks,
        build: Callable[[Fences], Awaitable[Managers]],
        attach: Callable[[Managers | None], None],
    ) -> None:
        self._reactor = reactor
        self._membership = membership
        self._groups = groups
        self._build = build
        self._attach = attach
        self.managers: Managers | None = None
        # The fences the managers serving were built under.
        self.fences: Fences | None = None
        self._building = False
        self._due: IDelayedCall | None = None
        groups.on_gained.append(lambda group, epoch: self._held_changed())
        groups.on_lost.append(lambda group: self._held_changed())

    def _held_now(self) -> Fences:
        return Fences.of(self._membership.id, self._groups.held)

    # Building for the groups held

    def _held_changed(self) -> None:
        if not self.running:
            return
        if self.managers is not None and self.fences != self._held_now():
            lost = set(self.fences.groups if self.fences else ()) - set(self._groups.held)
            self._stop_serving(f"lost {', '.join(sorted(lost))}" if lost else "gained groups")
        # At the end of this turn: a round taking several groups builds once for all.
        if self._due is None and not self._building:
            self._due = self._reactor.callLater(0, self._start_building)

    def _stop_serving(self, why: str) -> None:
        managers, self.managers, self.fences = self.managers, None, None
        if managers is None:
            return
        self.log.info("serving: {why}; rebuilding for the groups held", why=why)
        self._attach(None)
        _drop(managers)

    def _start_building(self) -> None:
        self._due = None
        if self._building or not self.running:
            return
        self._building = True
        d = ensureDeferred(self._build_for_held())
        d.addErrback(lambda f: self.log.failure("serving: building failed", f))
        d.addBoth(self._built)

    def _built(self, _: object) -> None:
        self._building = False
        # Held groups changed while the last build ran.
        if self.running and self.managers is None and self._groups.held:
            self._held_changed()

    async def _build_for_held(self) -> None:
        delay = self.REBUILD_BACKOFF
        while self.running and self.managers is None and self._groups.held:
            fences = self._held_now()
            self.log.info(
                "serving: holding {groups}: loading their jobs and workers from the store",
                groups=", ".join(fences.groups),
            )
            try:
                managers = await self._build(fences)
            except Exception as e:
                self.log.warn(
                    "serving: cannot load from the store ({error}); again in {delay:.1f} s",
                    error=e,
                    delay=delay,
                )
                await deferLater(self._reactor, delay, lambda: None)
                delay = min(delay * 2, self.REBUILD_BACKOFF_MAX)
                continue
            if not self.running or self._held_now() != fences:
                continue  # never started: nothing to stop; build for what is held now
            managers.tasks.on_fenced.append(self._refused)
            managers.tasks.on_unwritten.append(self._unwritten)
            self.managers, self.fences = managers, fences
            self._attach(managers)
            managers.startService()
            self.log.info("serving: serving {groups}", groups=", ".join(fences.groups))

    def _refused(self, refused: NotHeld) -> None:
        """The store refused a change: some group held is another's now. A round finds out
        which (renewing what is still held), and the managers are built again."""
        self.log.warn("serving: the store refused a change ({why})", why=refused)
        self._stop_serving("a change was refused")
        self._groups.round_now()
        self._held_changed()

    def _unwritten(self, error: BaseException) -> None:
        """A change could not be written (the store restarting, say): memory is ahead of the
        store. Build again from the store once it answers."""
        if self.managers is None:
            return
        self._stop_serving(f"a change could not be written ({error})")
        self._held_changed()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._due is not None and self._due.active():
            self._due.cancel()
        self._due = None
        managers, self.managers, self.fences = self.managers, None, None
        if managers is None:
            return None
        return _drop(managers)

    # Where a group is served

    def locks(self) -> Deferred[list[GroupLock]]:
        return self._groups.locks()

    def serves(self, group: str) -> bool:
        return self.managers is not None and self.fences is not None and group in self.fences.groups

    async def holder_url(
        self, group: str | None, patience: float, avoid: frozenset[str] = frozenset()
    ) -> str | None:
        """Where ``group`` is served: None when here; else the URL of its live holder. With
        ``group`` None, any member serving will do: this one if it serves, else the holder of
        the first group. Waits up to ``patience`` seconds for a holder; raises NoneServing.

        ``avoid``: URLs the caller found not answering. The member holding the group at one of
        them is dead and is waited out; a member that takes the group later at the same
        address (the dead one started again) is a new process, and is not avoided."""
        deadline = self._reactor.seconds() + patience
        dead: set[str] | None = None
        while True:
            if group is None and self.managers is not None:
                return None
            wanted = group or FIRST_GROUP
            if self.serves(wanted):
                return None
            holder = await self._holder(wanted)
            if dead is None:
                dead = {holder[0]} if holder is not None and holder[1] in avoid else set()
            if holder is not None and holder[0] not in dead:
                return holder[1]
            if self._reactor.seconds() >= deadline:
                raise NoneServing()
            await deferLater(self._reactor, self.LOOK_INTERVAL, lambda: None)

    async def _holder(self, group: str) -> tuple[str, str] | None:
        """(id, URL) of the live member holding ``group``, other than this one."""
        if group in self._groups.held:
            return None  # this member is about to serve it
        locks = await self._groups.locks()
        holder = next((lock.holder for lock in locks if lock.id == group and lock.held), None)
        if holder is None or holder == self._membership.id:
            return None
        for member in await self._membership.members():
            # At this member's own address, the holder is its predecessor, dead (a restarted
            # process is a new member): the group is free once its lease runs out.
            if member.id == holder and member.live and member.url != self._membership.url():
                return member.id, member.url.rstrip("/")
        return None


def _drop(managers: Managers) -> Deferred[None] | None:
    """Stop managers whose memory is no longer trusted: nothing they decided is written."""
    managers.tasks.close()
    return managers.stopService()  # type: ignore[no-any-return]
