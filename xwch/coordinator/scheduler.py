"""The scheduler: picks the most appropriate ready tasks for a worker's Work Request.

The tasks' manager tells it which tasks become ready and which stop being ready; the scheduler
keeps them in a heap ordered by job priority, then job age (first come, first served between jobs
of equal priority), then the task's place in its job. A worker only gets tasks whose binary exists
for its platform. Each pick is O(log n) per task taken; tasks skipped for their platform are
put back.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

TaskKey = tuple[str, str]  # (job id, task id)


@dataclass(frozen=True)
class WorkerView:
    """What the scheduler needs to know of a worker."""

    id: str
    platform: str
    performance: float


@dataclass(order=True)
class _Entry:
    sort_key: tuple[int, int, int]
    key: TaskKey = field(compare=False)
    # None: runs on any platform; else the platforms its binary exists for.
    platforms: frozenset[str] | None = field(compare=False)


class Scheduler:
    """The ready set, and the choice of tasks for each Work Request."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._ready: dict[TaskKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def add_ready(
        self,
        key: TaskKey,
        priority: int,
        job_order: int,
        position: int,
        platforms: frozenset[str] | None,
    ) -> None:
        if key in self._ready:
            return
        entry = _Entry((-priority, job_order, position), key, platforms)
        self._ready[key] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, key: TaskKey) -> None:
        """Forget a task that is no longer ready (cancelled); its heap entry is dropped lazily."""
        self._ready.pop(key, None)

    def is_ready(self, key: TaskKey) -> bool:
        return key in self._ready

    def pick(
        self,
        worker: WorkerView,
        slots: int,
        accept: Callable[[TaskKey], bool] = lambda _key: True,
    ) -> list[TaskKey]:
        """Take up to ``slots`` ready tasks for ``worker``; they stop being ready."""
        chosen: list[TaskKey] = []
        skipped: list[_Entry] = []
        while self._heap and len(chosen) < slots:
            entry = heapq.heappop(self._heap)
            if self._ready.get(entry.key) is not entry:
                continue  # removed or re-added since: a stale heap entry
            if entry.platforms is not None and worker.platform not in entry.platforms:
                skipped.append(entry)
                continue
            if not accept(entry.key):
                skipped.append(entry)
                continue
            del self._ready[entry.key]
            chosen.append(entry.key)
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return chosen
