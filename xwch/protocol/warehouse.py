"""A warehouse's signals to the coordinator, and the warehouses' own JSON routes.

``POST /warehouses`` (:class:`WarehouseRegistration` -> :class:`WarehouseRegistered`),
``POST /warehouses/{id}/heartbeat`` (:class:`Heartbeat` -> :class:`HeartbeatAnswer`),
``POST /warehouses/{id}/objects`` (:class:`ObjectsStored`), ``GET /warehouses``
(:class:`WarehouseList`); at a warehouse, ``POST /objects/{digest}/fetch``
(:class:`FetchRequest`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, ClassVar

from msgspec import Meta

from xwch.protocol.codec import Message
from xwch.protocol.objects import NonEmpty, ObjectRef, Size, Source
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import Count, Policy, TransfersReport


class WarehouseRegistration(Message, frozen=True):
    WHERE: ClassVar[str] = "warehouse"

    url: Annotated[str, Meta(pattern="^https?://")]
    capacity: int
    free: int
    site: str = "default"
    # The protocol the warehouse speaks; 0: a warehouse from before versions were exchanged.
    protocol: int = 0


class WarehouseRegistered(Message, frozen=True):
    WHERE: ClassVar[str] = "registration"

    warehouse_id: NonEmpty
    heartbeat_interval: Annotated[float, Meta(gt=0)]
    # The key capabilities are signed with, base64 (standard or URL-safe, padded or not).
    capability_key: NonEmpty
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        self.key()  # refused at decoding if it is not base64

    def key(self) -> bytes:
        text = self.capability_key
        padded = text + "=" * (-len(text) % 4)
        try:
            if "-" in text or "_" in text:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("capability_key: not base64") from None


class SessionCounts(Message, frozen=True):
    """A warehouse's transfer sessions: serving, its limit, refused since the last heartbeat."""

    active: Count = 0
    limit: Count = 0
    refused: Count = 0


class Heartbeat(Message, frozen=True, omit_defaults=True):
    WHERE: ClassVar[str] = "heartbeat"

    capacity: int
    free: int
    transfers: TransfersReport | None = None
    sessions: SessionCounts | None = None


class HeartbeatAnswer(Message, frozen=True):
    policy: Policy


class ObjectsStored(Message, frozen=True, omit_defaults=True):
    """Objects now stored at a warehouse; ``complete``: these are all it holds."""

    WHERE: ClassVar[str] = "stored"

    objects: tuple[ObjectRef, ...]
    complete: bool = False


class WarehouseSite(Message, frozen=True):
    id: str
    url: str
    site: str


class WarehouseList(Message, frozen=True):
    """The live warehouses and their sites (a worker finds its nearest)."""

    warehouses: tuple[WarehouseSite, ...]


class UploadState(Message, frozen=True, omit_defaults=True):
    """How far an upload is (``GET /objects/{digest}/upload``, and a packet's answer): stored,
    or the bytes held, where the next packet starts."""

    WHERE: ClassVar[str] = "upload"

    stored: bool = False
    offset: Size | None = None

    def __post_init__(self) -> None:
        if not self.stored and self.offset is None:
            raise ValueError("expected an offset or stored")


class FetchState(Message, frozen=True, omit_defaults=True):
    """A fetch order's answer: stored here already, or the copy has started."""

    stored: bool = False
    fetching: bool = False


class Health(Message, frozen=True):
    ok: bool
    free: int


class FetchRequest(Message, frozen=True):
    """Copy an object here from other warehouses (replication ordered by the scanner)."""

    WHERE: ClassVar[str] = "fetch"

    size: Size
    sources: Annotated[tuple[Source, ...], Meta(min_length=1)]
