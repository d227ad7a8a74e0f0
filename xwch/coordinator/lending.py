"""Idle workers go where the work is: a member whose groups have no ready task lends its
waiting workers to the group, held by another member, with the most ready tasks per slot.

So one big job uses the workers of every group: when the other members' own work runs out,
their workers move to the job's group, and its holder schedules them. A worker moves only
while it runs nothing (waiting for work): its move is a change of its group in the store, under
this member's fences, then the answer to its waiting Work Request; it asks again, is sent to
the holder of its new group (``routing.py``), which takes it on. Workers move back the same
way when that group's work runs out and another's has some.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.coordinator.managers import Managers
from xwch.store import placement
from xwch.store.database import Database
from xwch.store.group_locks import GroupLock
from xwch.store.placement import GroupLoads


def neediest(loads: GroupLoads, locks: list[GroupLock], here: tuple[str, ...]) -> str | None:
    """The group held by another live member with the most ready tasks per slot, if any has
    ready tasks."""
    foreign = [lock.id for lock in locks if lock.held and lock.id not in here]
    needing = [g for g in foreign if loads.of(g).ready > 0]
    if not needing:
        return None
    return max(needing, key=lambda g: (loads.of(g).ready / (loads.of(g).slots + 1), g))


def surplus(loads: GroupLoads, locks: list[GroupLock], here: tuple[str, ...]) -> int:
    """How many slots this member's groups should give away: those beyond their share of
    every live group's slots (shares in proportion to each group's tasks ready or running),
    at most what other groups with ready tasks and less than half their share lack. Half: two
    members whose shares shift a little as their jobs progress do not trade workers back and
    forth, each move costing redirects; a group with no worker, or far too few, gets some."""
    live = [lock.id for lock in locks if lock.held]
    total_slots = sum(loads.of(g).slots for g in live)
    total_backlog = sum(loads.of(g).backlog for g in live)
    if not total_backlog:
        return 0

    def share(group: str) -> float:
        return total_slots * loads.of(group).backlog / total_backlog

    lacking = sum(
        share(g) - loads.of(g).slots
        for g in live
        if g not in here and loads.of(g).ready > 0 and loads.of(g).slots < share(g) / 2
    )
    mine = [g for g in live if g in here]
    beyond = sum(loads.of(g).slots for g in mine) - sum(share(g) for g in mine)
    return max(0, int(min(beyond, lacking)))


class WorkerLending(Service):
    """Every ``interval`` seconds, moves workers to the groups of other members that need
    them: idle ones when nothing is ready here; busy ones, after their attempts end, when
    this member has more slots than its share of the work."""

    log = Logger()

    INTERVAL = 2.0

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        managers: Callable[[], Managers | None],
        locks: Callable[[], Deferred[list[GroupLock]]],
        interval: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._managers = managers
        self._locks = locks
        self._interval = interval or self.INTERVAL
        self._loop = LoopingCall(self._round)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _round(self) -> Deferred[object]:
        d: Deferred[object] = ensureDeferred(self.lend())
        # Logged, not raised: a LoopingCall stops for good on an error.
        d.addErrback(lambda f: self.log.warn("lending: a round failed: {error}", error=f.value))
        return d

    async def lend(self) -> list[str]:
        """One round: the workers moved to another member's group."""
        managers = self._managers()
        if managers is None or not managers.workers.workers:
            return []
        workers = managers.workers
        loads = await self._db.read(placement.group_loads_thd, True)
        locks = await self._locks()
        if managers is not self._managers():
            return []  # rebuilt meanwhile
        here = managers.tasks.groups or ()
        target = neediest(loads, locks, here)
        if target is None:
            workers.draining.clear()
            return []
        self._drain(managers, surplus(loads, locks, here))
        wanted = loads.of(target).ready
        chosen = [w for w in workers.draining if workers.busy_slots(w) == 0]
        if len(managers.scheduler) == 0:
            chosen += [w for w in self._idle(managers) if w not in chosen]
        moved: list[str] = []
        for worker_id in chosen:
            if wanted <= 0:
                break
            moved.append(worker_id)
            wanted -= workers.workers[worker_id].slots
        if not moved:
            return []
        # No new work meanwhile: a worker must not leave with attempts running here.
        workers.draining.update(moved)
        await managers.tasks.write(placement.move_workers_thd, moved, target)
        workers.hand_over(moved)
        managers.waiting.release(moved)
        self.log.info(
            "lending: {n} workers moved to {group}, which has {ready} tasks ready",
            n=len(moved),
            group=target,
            ready=loads.of(target).ready,
        )
        return moved

    @staticmethod
    def _drain(managers: Managers, slots: int) -> None:
        """Give no new work to workers holding about ``slots`` slots (half the surplus a
        round, so that members moving workers at once do not overshoot), the least busy
        first: they move once their attempts end."""
        workers = managers.workers
        if slots <= 0:
            workers.draining.clear()  # no longer too many here: they work on
            return
        slots = (slots + 1) // 2 - sum(workers.workers[w].slots for w in workers.draining)
        if slots <= 0 or len(workers.workers) - len(workers.draining) <= 1:
            return
        candidates = sorted(
            (w for w in workers.workers if w not in workers.draining),
            key=lambda w: (workers.busy_slots(w), w),
        )
        for worker_id in candidates[:-1]:  # never the last one
            if slots <= 0:
                break
            workers.draining.add(worker_id)
            slots -= workers.workers[worker_id].slots

    @staticmethod
    def _idle(managers: Managers) -> list[str]:
        """Workers waiting for work with nothing running."""
        return [
            w
            for w in managers.waiting.waiting_workers()
            if w in managers.workers.workers and managers.workers.busy_slots(w) == 0
        ]
