"""Stragglers: which running attempts are slow enough to be worth a duplicate near a job's end.

A job's last tasks decide when it ends. If one of them sits on a slow, overloaded or failing
machine, the job waits for it while other workers idle. So when a worker finds nothing ready,
the tasks' manager looks at jobs whose every unfinished task is running, and starts a duplicate
(a *speculative* attempt) of the slowest attempt this module calls slow: the first of the two to
succeed wins, the other is cancelled, and the result is recorded once.

An attempt is slow when it has run more than :attr:`Stragglers.SLOW_FACTOR` times what its
task should take, judged by the median time per unit of cost of the job's finished attempts,
and at least :attr:`Stragglers.MIN_SECONDS` (a duplicate of a short task is worth less than the
transfer it costs). Until one attempt of the job has finished there is nothing to judge by, and
nothing is duplicated.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from xwch.coordinator import trust
from xwch.protocol.wire import JOB_RUNNING

if TYPE_CHECKING:
    from xwch.coordinator.attempts import AttemptLedger
    from xwch.coordinator.job_state import JobState
    from xwch.coordinator.scheduler import TaskKey, WorkerView


class Stragglers:
    """One job's finished durations, and the verdict on its running attempts."""

    SLOW_FACTOR = 2.0
    MIN_SECONDS = 5.0
    # The median of the latest finished attempts: recent enough to follow the job's phases.
    KEPT = 101

    def __init__(self) -> None:
        self._per_cost: deque[float] = deque(maxlen=self.KEPT)
        self._median: float | None = None

    def finished(self, seconds: float, cost: float) -> None:
        """An attempt succeeded after ``seconds`` of running (its task's cost is ``cost``)."""
        if seconds > 0 and cost > 0:
            self._per_cost.append(seconds / cost)
            self._median = None

    def expected(self, cost: float) -> float | None:
        """What a task of ``cost`` should take; None until an attempt has finished."""
        if not self._per_cost:
            return None
        if self._median is None:
            self._median = statistics.median(self._per_cost)
        return self._median * cost

    def slowness(self, elapsed: float, cost: float) -> float | None:
        """How many times its expected time a running attempt has taken, if that is slow."""
        expected = self.expected(cost)
        if expected is None or elapsed < self.MIN_SECONDS:
            return None
        if elapsed <= self.SLOW_FACTOR * expected:
            return None
        return elapsed / expected if expected > 0 else float("inf")


def stragglers_for(
    jobs: Iterable[JobState], attempts: AttemptLedger, worker: WorkerView, free: int, now: float
) -> list[TaskKey]:
    """Slow attempts ``worker`` could race, slowest first, in jobs whose every unfinished
    task is running (near their end); at most one duplicate per task."""
    if free <= 0:
        return []
    found: list[tuple[float, TaskKey]] = []
    for job in jobs:
        running = attempts.of_job(job.id)
        if job.state != JOB_RUNNING or job.remaining > len(running):
            continue
        for attempt_id in running:
            attempt = attempts[attempt_id]
            t = job.tasks[attempt.task_id]
            platforms = job.platforms[t.spec.binary]
            if (
                len(attempts.of_task(job.id, t.spec.id)) != 1
                or t.spec.replication is not None
                or attempt.worker_id == worker.id
                or worker.id in t.failed_on
                or (platforms is not None and worker.platform not in platforms)
                or not trust.worker_accepts(
                    worker.platform, worker.trusted_keys, job.spec.binaries[t.spec.binary]
                )
            ):
                continue
            slowness = job.stragglers.slowness(now - attempt.started, t.spec.cost)
            if slowness is not None:
                found.append((slowness, (job.id, t.spec.id)))
    found.sort(reverse=True)
    return [key for _, key in found[:free]]
