"""The attempt ledger: the attempts a tasks' manager has running, found by id, by worker, by
task and by job; those presumed lost, whose late result may still count; and those each worker
must be told to kill.

It holds memory only: what an attempt's start or end writes to the store, and what the
scheduler is told, is the tasks' manager's business. It is a ``Mapping`` of the running
attempts by id, so ``attempt_id in ledger`` and ``ledger[attempt_id]`` read as they did when
the ledger was a dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from typing import TypeVar

from twisted.logger import Logger

from xwch.errors import XwchError
from xwch.protocol.states import AttemptStatus

# (job id, task id)
TaskKey = tuple[str, str]

_NONE: frozenset[str] = frozenset()
K = TypeVar("K")


class NotYourAttempt(XwchError):
    """A worker spoke of an attempt given to another worker."""


@dataclass
class Attempt:
    id: str
    job_id: str
    task_id: str
    number: int
    worker_id: str
    started: float
    # A duplicate of a slow attempt near the end of its job (see speculation.py): the first
    # of the two to succeed wins; neither is a "duplicate" for the scanner to repair.
    speculative: bool = False
    # Whether its worker said it started (a worker holds attempts ahead of its free slots):
    # until then its task is "assigned" in the store, not "running".
    begun: bool = False
    # Changed only through transitions.py, which records the change in the store with it.
    status: AttemptStatus = AttemptStatus.RUNNING
    # The checkpoint lineage it continues: a replica's own (lineages.py), else 0.
    lineage: int = 0

    @property
    def task_key(self) -> TaskKey:
        return self.job_id, self.task_id


class AttemptLedger(Mapping[str, Attempt]):
    """The running attempts (a mapping by id), with the indexes the tasks' manager asks."""

    log = Logger()

    def __init__(self) -> None:
        self._running: dict[str, Attempt] = {}
        # Ids of the running attempts of each worker (what its Work Alive should list), of
        # each task and of each job (for stragglers: a job near its end has few).
        self._by_worker: dict[str, set[str]] = {}
        self._by_task: dict[TaskKey, set[str]] = {}
        self._by_job: dict[str, set[str]] = {}
        # Attempts of workers declared lost: their late success may still count.
        self._presumed_lost: dict[str, Attempt] = {}
        # Attempts a worker must kill, told in its next Work Alive reply.
        self._to_kill: dict[str, set[str]] = {}

    # The running attempts, by id

    def __getitem__(self, attempt_id: str) -> Attempt:
        return self._running[attempt_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._running)

    def __len__(self) -> int:
        return len(self._running)

    # Starting and ending

    def started(self, attempt: Attempt) -> None:
        """Hold ``attempt`` as running, on its worker, for its task and its job."""
        self._running[attempt.id] = attempt
        self._by_worker.setdefault(attempt.worker_id, set()).add(attempt.id)
        self._by_task.setdefault(attempt.task_key, set()).add(attempt.id)
        self._by_job.setdefault(attempt.job_id, set()).add(attempt.id)

    def ended(self, attempt: Attempt) -> bool:
        """``attempt`` runs no more; False if it was not running."""
        if self._running.pop(attempt.id, None) is None:
            return False
        _discard(self._by_worker, attempt.worker_id, attempt.id)
        _discard(self._by_task, attempt.task_key, attempt.id)
        _discard(self._by_job, attempt.job_id, attempt.id)
        return True

    def kill(self, attempt: Attempt) -> None:
        """``attempt`` (ended) is to be killed by its worker, told at its next Work Alive."""
        self._to_kill.setdefault(attempt.worker_id, set()).add(attempt.id)

    def to_kill(self, worker_id: str) -> set[str]:
        """The attempts ``worker_id`` must kill, told once."""
        return self._to_kill.pop(worker_id, set())

    # Lost, and found again

    def presume_lost(self, attempt: Attempt) -> None:
        """``attempt`` (ended) went with its worker; a late result of it may still count."""
        self._presumed_lost[attempt.id] = attempt

    def lost(self, attempt_id: str) -> Attempt | None:
        return self._presumed_lost.get(attempt_id)

    def forget_lost(self, attempt_id: str) -> None:
        self._presumed_lost.pop(attempt_id, None)

    def readopt(self, attempt_id: str, worker_id: str) -> Attempt:
        """An attempt presumed lost runs again, on ``worker_id`` (its worker under a new id)."""
        attempt = self._presumed_lost.pop(attempt_id)
        attempt.worker_id = worker_id
        self.started(attempt)
        return attempt

    def job_over(self, job_id: str) -> None:
        """A job ended: none of its lost attempts can count any more."""
        for attempt_id in [a for a, att in self._presumed_lost.items() if att.job_id == job_id]:
            del self._presumed_lost[attempt_id]

    def worker_gone(self, worker_id: str) -> None:
        """A worker is lost: nothing more is told to it."""
        self._to_kill.pop(worker_id, None)

    # Lookups

    def attempt_of(self, attempt_id: str, worker_id: str) -> Attempt | None:
        """The running attempt, if it is still current; raises if another worker holds it."""
        attempt = self._running.get(attempt_id)
        if attempt is not None and attempt.worker_id != worker_id:
            self.log.warn(
                "worker {worker} spoke of attempt {attempt} of worker {holder}: refused",
                worker=worker_id,
                attempt=attempt_id,
                holder=attempt.worker_id,
            )
            raise NotYourAttempt(f"attempt {attempt_id} was not given to this worker")
        return attempt

    def running_on(self, worker_id: str) -> list[str]:
        return sorted(self._by_worker.get(worker_id, _NONE))

    def on_workers(self, worker_ids: Set[str]) -> list[Attempt]:
        """The running attempts of these workers, in the order they started."""
        return [a for a in self._running.values() if a.worker_id in worker_ids]

    def of_task(self, job_id: str, task_id: str) -> Set[str]:
        """Ids of the running attempts of a task (read only)."""
        return self._by_task.get((job_id, task_id), _NONE)

    def of_job(self, job_id: str) -> Set[str]:
        """Ids of the running attempts of a job (read only)."""
        return self._by_job.get(job_id, _NONE)

    def crowded_tasks(self) -> list[tuple[TaskKey, frozenset[str]]]:
        """The tasks with several running attempts, and their ids (what the scanner looks at
        for duplicates: far fewer than the tasks)."""
        return [(key, frozenset(ids)) for key, ids in self._by_task.items() if len(ids) > 1]

    def workers_of(self, job_id: str, task_id: str) -> set[str]:
        """The workers running an attempt of a task."""
        return {self._running[a].worker_id for a in self.of_task(job_id, task_id)}


def _discard(index: dict[K, set[str]], key: K, item: str) -> None:
    held = index.get(key)
    if held is not None:
        held.discard(item)
        if not held:
            del index[key]
