"""The scheduler: picks the most appropriate ready tasks for a worker's Work Request.

The tasks' manager tells the scheduler which tasks become ready (:meth:`Scheduler.add_ready`)
and which stop being ready (:meth:`Scheduler.remove`, or by being picked), which attempts start
and end, and what workers cache; for each Work Request it asks for up to ``slots`` tasks
(:meth:`Scheduler.pick`). Two policies implement this interface:

- ``locality`` (:mod:`xwch.coordinator.locality`, the default): data locality across sites and
  workers' caches, worker speed, fair share between users;
- ``fifo`` (:class:`FifoScheduler`): priority, then job age, then file order; blind to where
  data is and how fast workers are. Kept as a baseline to compare against, and as the simplest
  thing that could work.

Either way a worker only gets tasks whose binary exists for its platform, and each decision
costs O(log n) per task taken, never a scan of the ready set.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TaskKey = tuple[str, str]  # (job id, task id)
# Asked of the chosen task before it is given: False leaves it ready for another worker.
Accept = Callable[[TaskKey], bool]

POLICY_LOCALITY = "locality"
POLICY_FIFO = "fifo"
POLICIES = (POLICY_LOCALITY, POLICY_FIFO)

# The site of a worker or warehouse that did not say (warehouses register under this name).
DEFAULT_SITE = "default"


def accept_all(_key: TaskKey) -> bool:
    return True


@dataclass(frozen=True)
class WorkerView:
    """What the scheduler needs to know of a worker."""

    id: str
    platform: str
    performance: float
    site: str = DEFAULT_SITE
    # The slots it registered with: how much work its site can take at once.
    slots: int = 1
    # The keys whose signed programs alone it runs (empty: any program); see trust.py.
    trusted_keys: frozenset[str] = frozenset()


@dataclass(eq=False)
class ReadyTask:
    """A task the moment it becomes ready: what any policy may weigh."""

    key: TaskKey
    owner: int
    priority: int
    job_order: int
    position: int
    # None: runs on any platform; else the platforms its binary exists for.
    platforms: frozenset[str] | None
    cost: float = 1.0
    # (digest, size) of every input object (binaries excluded: every worker soon caches them).
    inputs: tuple[tuple[str, int], ...] = ()

    @property
    def job_id(self) -> str:
        return self.key[0]

    def runs_on(self, platform: str) -> bool:
        return self.platforms is None or platform in self.platforms


class Scheduler(ABC):
    """The interface every policy implements; the notifications default to doing nothing."""

    policy: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def add_ready(self, task: ReadyTask) -> None: ...

    @abstractmethod
    def remove(self, key: TaskKey) -> None:
        """Forget a task that is no longer ready (cancelled, or blocked again)."""

    @abstractmethod
    def is_ready(self, key: TaskKey) -> bool: ...

    @abstractmethod
    def pick(self, worker: WorkerView, slots: int, accept: Accept = accept_all) -> list[TaskKey]:
        """Take up to ``slots`` ready tasks for ``worker``; they stop being ready."""

    # What the tasks' manager tells. Hooks, not duties: a policy overrides those it uses.

    def attempt_started(self, key: TaskKey, owner: int, worker_id: str) -> None:
        """An attempt of ``key`` runs on ``worker_id`` (picked, recovered or readopted)."""
        return None

    def attempt_ended(
        self,
        key: TaskKey,
        owner: int,
        worker_id: str,
        seconds: float | None = None,
        cost: float = 1.0,
    ) -> None:
        """An attempt ended; ``seconds`` is its run time when it succeeded, ``cost`` its task's."""
        return None

    def job_ended(self, job_id: str) -> None:
        """A job ended: none of its tasks is ready any more."""
        return None

    def worker_cache(self, worker_id: str, prefixes: Iterable[str]) -> None:
        """The whole content of a worker's cache, as it registers (digest prefixes)."""
        return None

    def objects_cached(self, worker_id: str, digests: Iterable[str]) -> None:
        """``worker_id`` now holds these objects in its cache."""
        return None

    def objects_evicted(self, worker_id: str, digests: Iterable[str]) -> None:
        """``worker_id`` dropped these objects from its cache."""
        return None

    def object_stored(self, digest: str) -> None:
        """A warehouse stored a new copy of ``digest``: where tasks reading it best run may move."""
        return None

    def worker_seen(self, worker: WorkerView) -> None:
        """A worker registered (or was recovered after a restart)."""
        return None

    def worker_gone(self, worker_id: str) -> None:
        """A worker was declared lost: forget what is known of it."""
        return None
        return None


@dataclass(order=True)
class _Entry:
    sort_key: tuple[int, int, int]
    task: ReadyTask = field(compare=False)


class FifoScheduler(Scheduler):
    """One heap ordered by job priority, then job age, then the task's place in its job.

    Each pick is O(log n) per task taken; tasks skipped for their platform (or refused by
    ``accept``) are put back.
    """

    policy = POLICY_FIFO

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._ready: dict[TaskKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def add_ready(self, task: ReadyTask) -> None:
        if task.key in self._ready:
            return
        entry = _Entry((-task.priority, task.job_order, task.position), task)
        self._ready[task.key] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, key: TaskKey) -> None:
        # Its heap entry is dropped lazily, when it comes to the top.
        self._ready.pop(key, None)

    def is_ready(self, key: TaskKey) -> bool:
        return key in self._ready

    def pick(self, worker: WorkerView, slots: int, accept: Accept = accept_all) -> list[TaskKey]:
        chosen: list[TaskKey] = []
        skipped: list[_Entry] = []
        while self._heap and len(chosen) < slots:
            entry = heapq.heappop(self._heap)
            key = entry.task.key
            if self._ready.get(key) is not entry:
                continue  # removed or re-added since: a stale heap entry
            if not entry.task.runs_on(worker.platform) or not accept(key):
                skipped.append(entry)
                continue
            del self._ready[key]
            chosen.append(key)
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return chosen
