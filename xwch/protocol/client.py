"""What the coordinator tells a client about jobs, tasks, attempts, workers and results.

The same types are written by the coordinator and read by ``xwch-client``; ``--json`` prints
them as they are. Unknown fields are ignored, so a coordinator may add some.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from xwch.protocol.codec import Message
from xwch.protocol.objects import Digest, NonEmpty, Size
from xwch.protocol.wire import JOB_ENDED_STATES


class JobCreated(Message, frozen=True):
    WHERE: ClassVar[str] = "job"

    id: NonEmpty


class JobSummary(Message, frozen=True):
    """A job as ``GET /jobs/{job}`` tells it."""

    WHERE: ClassVar[str] = "job"

    id: str
    name: str
    state: str
    priority: int
    created: float
    ended: float | None
    total: int
    counts: Mapping[str, int] = {}
    message: str | None = None
    # Why ready tasks cannot run (no live worker can take them) -> how many.
    unrunnable: Mapping[str, int] = {}

    @property
    def has_ended(self) -> bool:
        return self.state in JOB_ENDED_STATES

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)


class JobList(Message, frozen=True):
    jobs: tuple[JobSummary, ...]


class TaskInfo(Message, frozen=True):
    """One row of ``GET /jobs/{job}/tasks``."""

    id: str
    state: str
    cost: float
    worker: str | None
    attempts: int
    started: float | None
    ended: float | None
    # A ready task no live worker can run: why.
    why: str | None = None
    # When its last checkpoint was recorded (a Unix time); None: it has none.
    checkpointed: float | None = None


class TaskList(Message, frozen=True):
    tasks: tuple[TaskInfo, ...]


class WorkerInfo(Message, frozen=True):
    """One row of ``GET /workers``; ``memory`` is in bytes, ``last_heard`` a Unix time."""

    id: str
    name: str
    state: str
    address: str
    platform: str
    cores: int
    memory: int
    slots: int
    performance: float
    tasks_done: int
    last_heard: float | None
    site: str | None = None
    # Why it computes nothing now (its volunteer's preferences), with state "suspended".
    reason: str | None = None
    # Slots holding an attempt, of ``slots``; None from a coordinator that does not say.
    busy: int | None = None


class WorkerList(Message, frozen=True):
    workers: tuple[WorkerInfo, ...]


class AttemptLog(Message, frozen=True):
    """The kept standard streams of one attempt (``GET .../tasks/{task}/logs``)."""

    WHERE: ClassVar[str] = "logs"

    task: str
    attempt: int
    state: str
    exit_code: int | None
    error: str | None
    stdout: str = ""
    stderr: str = ""
    worker: str | None = None


class ResultFile(Message, frozen=True):
    """One existing result of a job: output ``output`` of task ``task``."""

    task: str
    output: str
    digest: Digest
    size: Size


class ResultList(Message, frozen=True):
    results: tuple[ResultFile, ...]


class DashboardLogin(Message, frozen=True):
    """A login link of the dashboard (``POST /dashboard/logins``): the path on the coordinator,
    with a code that works once, within ``expires_in`` seconds."""

    WHERE: ClassVar[str] = "login"

    path: str
    expires_in: float
