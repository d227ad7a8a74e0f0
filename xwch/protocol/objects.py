"""Objects by content, where to read and store them, and small objects carried inline."""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar

from msgspec import Meta

from xwch.protocol.codec import Message, ProtocolError
from xwch.protocol.wire import DIGEST_PATTERN, DIGEST_REGEX, INLINE_MOST

Digest = Annotated[str, Meta(pattern=DIGEST_REGEX, description="SHA-256, 64 lowercase hex")]
Size = Annotated[int, Meta(ge=0)]
NonEmpty = Annotated[str, Meta(min_length=1)]


def require_digest(value: object, where: str) -> str:
    """``value`` if it is a SHA-256 digest (objects named in a path, not in a message)."""
    if not isinstance(value, str) or not DIGEST_PATTERN.match(value):
        raise ProtocolError(f"{where}: not a SHA-256 digest (64 lowercase hex digits)")
    return value


def check_inline(content: bytes, digest: str, size: int) -> None:
    """An inline object's bytes against its size, digest and the inline limit (``ValueError``,
    which the codec reports at the message's place)."""
    if size > INLINE_MOST:
        raise ValueError(f"only objects of at most {INLINE_MOST} bytes travel inline, not {size}")
    if len(content) != size:
        raise ValueError(f"{len(content)} bytes, not the {size} announced")
    if hashlib.sha256(content).hexdigest() != digest:
        raise ValueError(f"the bytes do not hash to {digest}")


class Source(Message, frozen=True):
    """Where an object can be read: a warehouse URL and a read capability for it."""

    url: str
    capability: str


class ObjectRef(Message, frozen=True):
    """An object by content: its SHA-256 and size."""

    digest: Digest
    size: Size


class InputFile(Message, frozen=True):
    """One file an attempt finds in its working directory before it starts."""

    path: str
    digest: Digest
    size: Size


class ProgramSigned(Message, frozen=True):
    """Who signed a program (``ed25519:BASE64``) and the signature (base64); see xwch.signing."""

    key: str
    signature: str


class BinaryRef(Message, frozen=True):
    """The program an attempt runs: a single executable, or a bundle archive and its entry."""

    digest: Digest
    size: Size
    bundle: bool = False
    entry: str | None = None
    # The job file's name for it (``binaries`` key): what a failure to start it is told by,
    # rather than the worker's cache path. Optional: a message without it reads the same.
    name: str | None = None
    # Its signature, over its digest, ``name`` and ``job_name`` (the name of the job it runs
    # for); absent when the job's client signed nothing. A worker that trusts keys checks it.
    signed: ProgramSigned | None = None
    job_name: str | None = None

    def __post_init__(self) -> None:
        if self.bundle and not self.entry:
            raise ValueError("a bundle needs an entry")


class OutputFile(Message, frozen=True, omit_defaults=True):
    """One output an attempt left: already stored at a warehouse, or (``content``, at most
    :data:`INLINE_MOST` bytes) carried in the result for the coordinator to keep."""

    name: str
    digest: Digest
    size: Size
    content: bytes | None = None

    def __post_init__(self) -> None:
        if self.content is not None:
            check_inline(self.content, self.digest, self.size)


# POST /objects/uploads


class UploadsRequest(Message, frozen=True, omit_defaults=True):
    """Where to upload these objects; ``site``: a warehouse of this site if it has a live one."""

    WHERE: ClassVar[str] = "uploads"

    objects: tuple[ObjectRef, ...]
    site: str | None = None


class WarehouseAddress(Message, frozen=True):
    id: str
    url: str


class UploadSlot(Message, frozen=True):
    """One object offered: ``present`` somewhere already (skip it), or where to put it."""

    digest: Digest
    present: bool
    capability: str | None = None

    def __post_init__(self) -> None:
        if not self.present and self.capability is None:
            raise ValueError("an object to upload needs a capability")


class UploadPlan(Message, frozen=True):
    """Where to upload (one warehouse) and which objects it still lacks."""

    warehouse: WarehouseAddress
    objects: tuple[UploadSlot, ...]

    @property
    def warehouse_id(self) -> str:
        return self.warehouse.id

    @property
    def warehouse_url(self) -> str:
        return self.warehouse.url


# POST /objects/downloads


class DownloadsRequest(Message, frozen=True):
    WHERE: ClassVar[str] = "downloads"

    digests: tuple[Digest, ...]


class ObjectSources(Message, frozen=True, omit_defaults=True):
    """Where one object can be read; a small object the coordinator keeps comes with its bytes
    (and no sources)."""

    digest: Digest
    size: Size
    sources: tuple[Source, ...]
    content: bytes | None = None

    def __post_init__(self) -> None:
        if self.content is not None:
            check_inline(self.content, self.digest, self.size)


class DownloadsAnswer(Message, frozen=True):
    objects: tuple[ObjectSources, ...]


# GET /objects/{digest}


class Holder(Message, frozen=True):
    id: str
    url: str
    site: str


class ObjectLocations(Message, frozen=True):
    """Which live warehouses hold an object, and whether the coordinator keeps it."""

    digest: Digest
    size: Size
    warehouses: tuple[Holder, ...]
    inline: bool
