"""What the coordinator's client routes answer about objects, as frozen dataclasses.

Jobs, tasks, workers and logs are in :mod:`xwch.views`, shared with the coordinator.

Each record checks its fields when it is read (``from_json`` raises
:class:`~xwch.protocol.ProtocolError` naming the field), so the rest of the client works with
typed values and a coordinator speaking another version fails with one clear message instead of a
``KeyError`` deep in a table. Unknown fields are ignored: the coordinator may add some.

``to_json`` gives the shape ``--json`` prints; it is the client's own contract, independent of
fields the coordinator may add later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xwch.protocol import (
    NUMBER,
    ObjectRef,
    ProtocolError,
    Source,
    decode_content,
    get_field,
    get_optional,
    require_digest,
    require_object,
)


def _time(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    value = get_optional(doc, key, NUMBER, where)
    return None if value is None else float(value)


def _list(doc: object, key: str, where: str) -> list[Any]:
    return get_field(require_object(doc, where), key, list, where)


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
            task=get_field(d, "task", str, where),
            output=get_field(d, "output", str, where),
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
            present = get_field(o, "present", bool, at)
            capability = get_optional(o, "capability", str, at)
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
            warehouse_id=str(get_field(warehouse, "id", (str, int), f"{where}.warehouse")),
            warehouse_url=get_field(warehouse, "url", str, f"{where}.warehouse"),
            objects=tuple(slots),
        )


@dataclass(frozen=True)
class ObjectSources:
    """Where one object can be downloaded from."""

    digest: str
    size: int
    sources: tuple[Source, ...]
    # A small object the coordinator keeps comes with its bytes (and no sources).
    content: bytes | None = None

    @classmethod
    def from_json(cls, doc: object, where: str) -> ObjectSources:
        d = require_object(doc, where)
        ref = ObjectRef.from_json(d, where)
        content = None
        if d.get("content") is not None:
            content = decode_content(d["content"], ref, f"{where}.content")
        return cls(
            digest=ref.digest,
            size=ref.size,
            sources=tuple(
                Source.from_json(s, f"{where}.sources[{n}]")
                for n, s in enumerate(_list(d, "sources", where))
            ),
            content=content,
        )
