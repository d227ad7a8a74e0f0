"""Plain frozen values that cross between the database thread and the reactor thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xwch.protocol.client import WorkerInfo
from xwch.protocol.states import AttemptStatus, TaskStatus


@dataclass(frozen=True)
class TokenRecord:
    id: int
    role: str
    name: str


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    owner: int
    state: str
    priority: int
    created: float
    total: int
    spec: str
    ended: float | None = None
    message: str | None = None
    # The logical group whose holder runs it (None: g1, as before groups were shared).
    group: str | None = None


@dataclass(frozen=True)
class NewTask:
    task_id: str
    position: int
    state: TaskStatus
    cost: float
    retries: int


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    token_id: int
    name: str
    address: str
    platform: str
    cores: int
    memory: int
    slots: int
    performance: float
    site: str | None
    state: str
    registered: float
    last_heard: float
    tasks_done: int = 0
    # The public keys whose signed programs alone it runs (none: any program).
    trusted_keys: tuple[str, ...] = ()
    # The logical group it belongs to (None: g1, as before groups were shared).
    group: str | None = None

    def info(self) -> WorkerInfo:
        """What clients are told of this worker."""
        return WorkerInfo(
            id=self.id,
            name=self.name,
            state=self.state,
            address=self.address,
            platform=self.platform,
            cores=self.cores,
            memory=self.memory,
            slots=self.slots,
            performance=self.performance,
            tasks_done=self.tasks_done,
            last_heard=self.last_heard,
            site=self.site,
        )


@dataclass(frozen=True)
class WarehouseRecord:
    id: str
    url: str
    site: str
    capacity: int
    free: int
    registered: float
    last_heard: float


@dataclass(frozen=True)
class StoredObjects:
    """What the store knows of some objects: (digest, warehouse id, size) of each copy at a
    warehouse, the warehouses holding them, and the bytes of those kept inline."""

    locations: tuple[tuple[str, str, int], ...]
    warehouses: tuple[WarehouseRecord, ...]
    inline: Mapping[str, bytes]


@dataclass(frozen=True)
class NewAttempt:
    id: str
    job_id: str
    task_id: str
    number: int
    worker_id: str
    worker_name: str
    started: float
    # A duplicate of a slow attempt (stragglers), which the scanner must not repair away.
    speculative: bool = False
    # The checkpoint lineage it continues (the number of the attempt that opened it; 0: the
    # task is not replicated, or keeps no checkpoint).
    lineage: int = 0


@dataclass(frozen=True)
class AttemptUpdate:
    id: str
    state: AttemptStatus
    ended: float | None
    exit_code: int | None = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    # Set when an attempt passes to another worker id (a lost worker that registered again).
    worker_id: str | None = None


@dataclass(frozen=True)
class TaskUpdate:
    """New values for some columns of some tasks of one job (same values for all of them)."""

    job_id: str
    task_ids: tuple[str, ...]
    values: Mapping[str, Any]


@dataclass(frozen=True)
class OutputRow:
    job_id: str
    task_id: str
    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    state: str
    ended: float | None
    message: str | None


@dataclass
class Change:
    """Everything one decision of the tasks' manager changes, written in one transaction."""

    new_attempts: list[NewAttempt] = field(default_factory=list)
    attempt_updates: list[AttemptUpdate] = field(default_factory=list)
    task_updates: list[TaskUpdate] = field(default_factory=list)
    outputs: list[OutputRow] = field(default_factory=list)
    # digest -> bytes of the small outputs the coordinator keeps itself (protocol.INLINE_MOST).
    inline_objects: dict[str, bytes] = field(default_factory=dict)
    # (job, task) whose recorded outputs are void: the task runs again (lineage).
    removed_outputs: list[tuple[str, str]] = field(default_factory=list)
    job_updates: list[JobUpdate] = field(default_factory=list)
    tasks_done_by_worker: dict[str, int] = field(default_factory=dict)

    def can_absorb(self, later: Change) -> bool:
        """Whether :meth:`absorb` keeps the meaning: the store writes a change's outputs after
        removing outputs, so outputs removed by ``later`` must not be among these."""
        return not (later.removed_outputs and self.outputs)

    def absorb(self, later: Change) -> None:
        """Add what ``later`` changes after what this one does: written as one, they change
        the store as the two written in turn would (see :meth:`can_absorb`)."""
        self.new_attempts.extend(later.new_attempts)
        self.attempt_updates.extend(later.attempt_updates)
        self.task_updates.extend(later.task_updates)
        self.outputs.extend(later.outputs)
        self.inline_objects.update(later.inline_objects)
        self.removed_outputs.extend(later.removed_outputs)
        self.job_updates.extend(later.job_updates)
        for worker, n in later.tasks_done_by_worker.items():
            self.tasks_done_by_worker[worker] = self.tasks_done_by_worker.get(worker, 0) + n

    def __bool__(self) -> bool:
        return bool(
            self.new_attempts
            or self.attempt_updates
            or self.task_updates
            or self.outputs
            or self.inline_objects
            or self.removed_outputs
            or self.job_updates
            or self.tasks_done_by_worker
        )


@dataclass(frozen=True)
class RecoveredTask:
    task_id: str
    state: TaskStatus
    failures: int
    attempts: int
    outputs: Mapping[str, tuple[str, int]]


@dataclass(frozen=True)
class RecoveredAttempt:
    id: str
    task_id: str
    number: int
    worker_id: str
    started: float
    speculative: bool = False
    lineage: int = 0


@dataclass(frozen=True)
class RecoveredJob:
    row: JobRow
    tasks: tuple[RecoveredTask, ...]
    running: tuple[RecoveredAttempt, ...]
