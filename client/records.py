"""What the coordinator's client routes answer, as frozen dataclasses.

Each record checks its fields when it is read (``from_json`` raises
:class:`~xwch.protocol.ProtocolError` naming the field), so the rest of the client works with
typed values and a coordinator speaking another version fails with one clear message instead of a
``KeyError`` deep in a table. Unknown fields are ignored: the coordinator may add some.

``to_json`` gives the shape ``--json`` prints; it is the client's own contract, independent of
fields the coordinator may add later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xwch.protocol import (
    JOB_ENDED_STATES,
    ObjectRef,
    ProtocolError,
    Source,
    require_digest,
    require_object,
)

T = TypeVar("T")

_NUMBER = (int, float)


def _field(doc: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str) -> T:
    if key not in doc:
        raise ProtocolError(f"{where}: missing field {key!r}")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, never on our wire.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"{where}.{key}: unexpected {type(value).__name__}")
    return value  # type: ignore[return-value]


def _optional(
    doc: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str
) -> T | None:
    if doc.get(key) is None:
        return None
    return _field(doc, key, kind, where)


def _time(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _optional(doc, key, _NUMBER, where)
    return None if value is None else float(value)


def _list(doc: object, key: str, where: str) -> list[Any]:
    return _field(require_object(doc, where), key, list, where)


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
        counts = _field(d, "counts", dict, where)
        if not all(isinstance(k, str) and type(v) is int for k, v in counts.items()):
            raise ProtocolError(f"{where}.counts: expected task state -> integer")
        return cls(
            id=_field(d, "id", str, where),
            name=_field(d, "name", str, where),
            state=_field(d, "state", str, where),
            priority=_optional(d, "priority", int, where) or 0,
            created=float(_field(d, "created", _NUMBER, where)),
            ended=_time(d, "ended", where),
            total=_field(d, "total", int, where),
            counts=dict(counts),
            message=_optional(d, "message", str, where),
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
            id=_field(d, "id", str, where),
            state=_field(d, "state", str, where),
            cost=float(_field(d, "cost", _NUMBER, where)),
            worker=_optional(d, "worker", str, where),
            attempts=_field(d, "attempts", int, where),
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
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> WorkerInfo:
        d = require_object(doc, where)
        return cls(
            id=str(_field(d, "id", (str, int), where)),
            name=_field(d, "name", str, where),
            state=_field(d, "state", str, where),
            address=_field(d, "address", str, where),
            platform=_field(d, "platform", str, where),
            cores=_field(d, "cores", int, where),
            memory=_field(d, "memory", int, where),
            slots=_field(d, "slots", int, where),
            performance=float(_field(d, "performance", _NUMBER, where)),
            tasks_done=_field(d, "tasks_done", int, where),
            last_heard=_time(d, "last_heard", where),
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
            task=_field(d, "task", str, where),
            attempt=_field(d, "attempt", int, where),
            state=_field(d, "state", str, where),
            exit_code=_optional(d, "exit_code", int, where),
            error=_optional(d, "error", str, where),
            stdout=_optional(d, "stdout", str, where) or "",
            stderr=_optional(d, "stderr", str, where) or "",
            worker=_optional(d, "worker", str, where),
        )


@dataclass(frozen=True)
class ResultFile:
    """One existing result of a job: output ``output`` of task ``task``."""

    task: str
    output: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "output": self.output, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, doc: object, where: str) -> ResultFile:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        return cls(
            task=_field(d, "task", str, where),
            output=_field(d, "output", str, where),
            digest=ref.digest,
            size=ref.size,
        )


@dataclass(frozen=True)
class UploadSlot:
    """The coordinator's answer for one object the client offers to upload."""

    digest: str
    present: bool
    capability: str | None


@dataclass(frozen=True)
class UploadPlan:
    """Where to upload (one warehouse) and which objects it still lacks."""

    warehouse_id: str
    warehouse_url: str
    objects: tuple[UploadSlot, ...]

    @classmethod
    def from_json(cls, doc: object, where: str = "uploads") -> UploadPlan:
        d = require_object(doc, where)
        warehouse = require_object(d.get("warehouse"), f"{where}.warehouse")
        slots = []
        for n, item in enumerate(_list(d, "objects", where)):
            at = f"{where}.objects[{n}]"
            o = require_object(item, at)
            present = _field(o, "present", bool, at)
            capability = _optional(o, "capability", str, at)
            if not present and capability is None:
                raise ProtocolError(f"{at}.capability: missing for an object to upload")
            slots.append(
                UploadSlot(
                    digest=require_digest(o.get("digest"), f"{at}.digest"),
                    present=present,
                    capability=capability,
                )
            )
        return cls(
            warehouse_id=str(_field(warehouse, "id", (str, int), f"{where}.warehouse")),
            warehouse_url=_field(warehouse, "url", str, f"{where}.warehouse"),
            objects=tuple(slots),
        )


@dataclass(frozen=True)
class ObjectSources:
    """Where one object can be downloaded from."""

    digest: str
    size: int
    sources: tuple[Source, ...]

    @classmethod
    def from_json(cls, doc: object, where: str) -> ObjectSources:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        return cls(
            digest=ref.digest,
            size=ref.size,
            sources=tuple(
                Source.from_json(s, f"{where}.sources[{n}]")
                for n, s in enumerate(_list(d, "sources", where))
            ),
        )
