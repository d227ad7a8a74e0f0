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
