"""The scanner's repairs of a tasks' manager: what fell through the cracks of its decisions.

Each is a sweep over the jobs in memory, run every ``--scan-interval`` seconds, that counts
what it repaired for ``GET /api/v1/status``: ready tasks nobody offers to workers, tasks held
by duplicate attempts, and running attempts of workers that are gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from xwch.coordinator.transitions import move_in_memory
from xwch.protocol.states import TaskStatus
from xwch.store.records import Change

if TYPE_CHECKING:
    from xwch.coordinator.tasks import TasksManager


class TaskRepairs:
    """The repairs of one :class:`~xwch.coordinator.tasks.TasksManager`."""

    def __init__(self, manager: TasksManager) -> None:
        self._manager = manager

    def orphans(self) -> int:
        """Ready tasks nobody holds: put them back in the scheduler's ready set."""
        manager = self._manager
        repaired = 0
        for job in manager.jobs.values():
            for t in job.tasks.values():
                waiting = t.relaunch is not None and t.relaunch.active()
                running = manager.attempts.of_task(job.id, t.spec.id)
                if t.state == TaskStatus.RUNNING and not running:
                    # Memory only, as at recovery: a running row with no attempt reads as ready.
                    move_in_memory(job.id, [t], TaskStatus.READY)
                    manager.queue_ready(job, t)
                    repaired += 1
                elif t.state == TaskStatus.RUNNING and t.spec.replication is not None:
                    # Replicas given back or never received are replaced here.
                    manager.replicated.offer(job, t)
                elif (
                    t.state == TaskStatus.READY
                    and not waiting
                    and not manager.scheduler.is_ready((job.id, t.spec.id))
                ):
                    manager.queue_ready(job, t)
                    repaired += 1
        return repaired

    async def duplicates(self) -> int:
        """Tasks held by several attempts: keep the one that started first."""
        manager = self._manager
        attempts = manager.attempts
        now = manager.reactor.seconds()
        change = Change()
        for job in manager.jobs.values():
            for t in job.tasks.values():
                # A speculative attempt races a slow one on purpose: it is no duplicate.
                plain = {
                    a for a in attempts.of_task(job.id, t.spec.id) if not attempts[a].speculative
                }
                # Replicas of a task run on several workers on purpose, too.
                if len(plain) < 2 or t.spec.replication is not None:
                    continue
                keep = min(plain, key=lambda a: (attempts[a].started, a))
                for attempt_id in sorted(plain - {keep}):
                    manager.cancel_attempt(attempts[attempt_id], now, "duplicate attempt", change)
        if change:
            await manager.record(change)
        return len(change.attempt_updates)

    async def abandoned(self, known_workers: Iterable[str]) -> int:
        """Running attempts whose worker is gone (not registered): they are lost."""
        attempts = self._manager.attempts
        known = set(known_workers)
        gone = {a.worker_id for a in attempts.values() if a.worker_id not in known}
        count = sum(1 for a in attempts.values() if a.worker_id in gone)
        if gone:
            await self._manager.workers_lost(gone)
        return count
