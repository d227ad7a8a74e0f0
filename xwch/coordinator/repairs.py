"""The scanner's repairs of a tasks' manager: what fell through the cracks of its decisions.

Each runs every ``--scan-interval`` seconds and counts what it repaired for
``GET /api/v1/status``: ready tasks nobody offers to workers (a sweep over the jobs in memory,
a slice at a time so that requests are served between slices), tasks held by duplicate attempts
and running attempts of workers that are gone (both found in the attempt ledger).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.internet.task import deferLater

from xwch.coordinator.transitions import move_in_memory
from xwch.protocol.states import TaskStatus
from xwch.store.records import Change

if TYPE_CHECKING:
    from xwch.coordinator.job_state import JobState, TaskState
    from xwch.coordinator.tasks import TasksManager


class TaskRepairs:
    """The repairs of one :class:`~xwch.coordinator.tasks.TasksManager`."""

    # Tasks looked at between two turns of the reactor. A sweep over a job of 180,000 tasks
    # took the reactor for a good part of a second, every scan interval: every Work Request
    # arriving meanwhile waited that long (bench/fleet.py).
    SLICE = 5000

    def __init__(self, manager: TasksManager) -> None:
        self._manager = manager

    async def orphans(self) -> int:
        """Ready tasks nobody holds: put them back in the scheduler's ready set."""
        manager = self._manager
        repaired = 0
        looked = 0
        for job in list(manager.jobs.values()):
            for t in list(job.tasks.values()):
                looked += 1
                if looked % self.SLICE == 0:
                    await deferLater(manager.reactor, 0, lambda: None)
                if manager.closed:
                    return repaired
                if manager.jobs.get(job.id) is not job:
                    break  # it ended meanwhile
                if job.tasks.get(t.spec.id) is not t:
                    continue  # a comparison that ended meanwhile
                repaired += self._orphan(job, t)
        return repaired

    def _orphan(self, job: JobState, t: TaskState) -> int:
        """Repair ``t`` if nobody holds it; how many were repaired (0 or 1)."""
        manager = self._manager
        waiting = t.relaunch is not None and t.relaunch.active()
        if t.state == TaskStatus.RUNNING and not manager.attempts.of_task(job.id, t.spec.id):
            # Memory only, as at recovery: a running row with no attempt reads as ready.
            move_in_memory(job.id, [t], TaskStatus.READY)
            manager.queue_ready(job, t)
            return 1
        if t.state == TaskStatus.RUNNING and t.spec.replication is not None:
            # Replicas given back or never received are replaced here.
            manager.replicated.offer(job, t)
        elif (
            t.state == TaskStatus.READY
            and not waiting
            and not manager.scheduler.is_ready((job.id, t.spec.id))
        ):
            manager.queue_ready(job, t)
            return 1
        return 0

    async def duplicates(self) -> int:
        """Tasks held by several attempts: keep the one that started first. Only the tasks
        the ledger knows several attempts of are looked at, not every task."""
        manager = self._manager
        attempts = manager.attempts
        now = manager.reactor.seconds()
        change = Change()
        for (job_id, task_id), held in attempts.crowded_tasks():
            job = manager.jobs.get(job_id)
            if job is None or task_id not in job.tasks:
                continue
            t = job.tasks[task_id]
            # A speculative attempt races a slow one on purpose: it is no duplicate.
            plain = {a for a in held if not attempts[a].speculative}
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
