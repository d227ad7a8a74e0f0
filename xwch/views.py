"""What the coordinator tells about jobs, tasks, attempts and workers.

One frozen dataclass per answer of the client routes, written by the coordinator (``to_json``)
and read by the client (``from_json``, which checks each field and raises
:class:`~xwch.protocol.ProtocolError` naming it). Unknown fields are ignored, so a coordinator
may add some.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xwch.protocol import (
    JOB_ENDED_STATES,
    NUMBER,
    ProtocolError,
    get_field,
    get_optional,
    require_object,
)

_NUMBER = NUMBER


def _time(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    value = get_optional(doc, key, NUMBER, where)
    return None if value is None else float(value)


@dataclass(frozen=True)
class JobSummary:
    """A job as ``GET /jobs/{job}`` tells it."""

    id: str
    name: str
    state: str
    priority: int
    created: float
    ended: float | None
    total: int
    counts: Mapping[str, int] = field(default_factory=dict)
    message: str | None = None

    @property
    def has_ended(self) -> bool:
        return self.state in JOB_ENDED_STATES

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "priority": self.priority,
            "created": self.created,
            "ended": self.ended,
            "total": self.total,
            "counts": dict(self.counts),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "job") -> JobSummary:
        d = require_object(doc, where)
        counts = get_field(d, "counts", dict, where)
        if not all(isinstance(k, str) and type(v) is int for k, v in counts.items()):
            raise ProtocolError(f"{where}.counts: expected task state -> integer")
        return cls(
            id=get_field(d, "id", str, where),
            name=get_field(d, "name", str, where),
            state=get_field(d, "state", str, where),
            priority=get_optional(d, "priority", int, where) or 0,
            created=float(get_field(d, "created", _NUMBER, where)),
            ended=_time(d, "ended", where),
            total=get_field(d, "total", int, where),
            counts=dict(counts),
            message=get_optional(d, "message", str, where),
        )


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``GET /jobs/{job}/tasks``."""

    id: str
    state: str
    cost: float
    worker: str | None
    attempts: int
    started: float | None
    ended: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "cost": self.cost,
            "worker": self.worker,
            "attempts": self.attempts,
            "started": self.started,
            "ended": self.ended,
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> TaskInfo:
        d = require_object(doc, where)
        return cls(
            id=get_field(d, "id", str, where),
            state=get_field(d, "state", str, where),
            cost=float(get_field(d, "cost", _NUMBER, where)),
            worker=get_optional(d, "worker", str, where),
            attempts=get_field(d, "attempts", int, where),
            started=_time(d, "started", where),
            ended=_time(d, "ended", where),
        )


@dataclass(frozen=True)
class WorkerInfo:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "address": self.address,
            "platform": self.platform,
            "cores": self.cores,
            "memory": self.memory,
            "slots": self.slots,
            "performance": self.performance,
            "tasks_done": self.tasks_done,
            "last_heard": self.last_heard,
            "site": self.site,
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> WorkerInfo:
        d = require_object(doc, where)
        return cls(
            id=str(get_field(d, "id", (str, int), where)),
            name=get_field(d, "name", str, where),
            state=get_field(d, "state", str, where),
            address=get_field(d, "address", str, where),
            platform=get_field(d, "platform", str, where),
            cores=get_field(d, "cores", int, where),
            memory=get_field(d, "memory", int, where),
            slots=get_field(d, "slots", int, where),
            performance=float(get_field(d, "performance", _NUMBER, where)),
            tasks_done=get_field(d, "tasks_done", int, where),
            last_heard=_time(d, "last_heard", where),
            site=get_optional(d, "site", str, where),
        )


@dataclass(frozen=True)
class AttemptLog:
    """The kept standard streams of one attempt (``GET .../tasks/{task}/logs``)."""

    task: str
    attempt: int
    state: str
    exit_code: int | None
    error: str | None
    stdout: str
    stderr: str
    worker: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "attempt": self.attempt,
            "state": self.state,
            "exit_code": self.exit_code,
            "error": self.error,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "worker": self.worker,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "logs") -> AttemptLog:
        d = require_object(doc, where)
        return cls(
            task=get_field(d, "task", str, where),
            attempt=get_field(d, "attempt", int, where),
            state=get_field(d, "state", str, where),
            exit_code=get_optional(d, "exit_code", int, where),
            error=get_optional(d, "error", str, where),
            stdout=get_optional(d, "stdout", str, where) or "",
            stderr=get_optional(d, "stderr", str, where) or "",
            worker=get_optional(d, "worker", str, where),
        )
