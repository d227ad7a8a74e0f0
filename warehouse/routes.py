"""The warehouse's HTTP routes (docs/protocol.md, "Warehouse routes") as twisted.web resources.

Reads and writes need a capability signed with the key the coordinator handed out at
registration; until registration completes every object route answers 503 busy. A stored answer
(``{"stored": true}``) is always preceded by a report to the coordinator's catalog, so a client
that got it can at once create a job that refers to the object.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch import capability
from xwch.errors import (
    ApiError,
    CapabilityError,
    DigestMismatch,
    OffsetMismatch,
    Unreachable,
)
from xwch.protocol.codec import ProtocolError, decode
from xwch.protocol.objects import ObjectRef, Source
from xwch.protocol.warehouse import FetchRequest, FetchState, Health, UploadState
from xwch.protocol.wire import (
    CAPABILITY_HEADER,
    DIGEST_PATTERN,
    OBJECT_SIZE_HEADER,
    PACKET_DIGEST_HEADER,
    PACKET_ENCODING_HEADER,
    SESSION_HEADER,
)
from xwch.transfer.packet import CorruptPacket, decode_packet

from .answers import (
    JsonResource,
    NotFound,
    Refusal,
    Responder,
    header_text,
    json_body,
    refusal_body,
    refusing,
)
from .blocking import BlockingRunner
from .objects import ObjectStore
from .ranges import parse_range
from .replication import Replicator
from .serving import serve_packet, stream
from .traffic import CLIENTS, WarehouseNetwork

log = Logger()

# Far above any packet size the communication manager sets (a few MiB); a bound on the memory
# one request may take.
MAX_PACKET_SIZE = 64 * 1024 * 1024
# Registration is normally a matter of a round trip: ask again very soon.
REGISTERING_RETRY_AFTER = 1.0
# The coordinator could not be told about a stored object: let it come back first.
REPORT_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Registration:
    """What the coordinator told this warehouse when it registered."""

    warehouse_id: str
    capability_key: bytes
    heartbeat_interval: float


class Catalog(Protocol):
    """The coordinator's catalog, as the warehouse sees it."""

    def objects_stored(self, refs: Sequence[ObjectRef]) -> Awaitable[None]:
        """Tell the coordinator these objects are stored here; raise if it was not told."""


class WarehouseResource(Resource):
    """The root of the warehouse's routes; holds what every route needs."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: Catalog,
        clock: IReactorTime,
        blocking: BlockingRunner,
    ) -> None:
        super().__init__()
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.blocking = blocking
        # Set by the service once the coordinator has answered the registration.
        self.registration: Registration | None = None
        # Copies from other warehouses (replication); set by the service when it can make them.
        self.replicator: Replicator | None = None
        # Caps, transfer sessions, meter, compression (the service sets caps and policy).
        self.network = WarehouseNetwork(clock)
        # One writer at a time per object: offsets, the running hash and the commit must not
        # interleave even when two uploaders send the same object.
        self._locks: dict[str, DeferredLock] = {}
        self.putChild(b"objects", _ObjectsResource(self))
        self.putChild(b"health", _HealthResource(self))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()

    def render(self, request: Request) -> bytes:
        return refusal_body(request, Refusal(404, "not_found", "no such route"))

    def authorize(self, request: Request, op: str, digest: str) -> None:
        """Refuse unless registered and the request carries a capability for ``op`` here."""
        registration = self.registration
        if registration is None:
            raise Refusal(
                503,
                "busy",
                "this warehouse is still registering with its coordinator",
                retry_after=REGISTERING_RETRY_AFTER,
            )
        try:
            capability.verify(
                registration.capability_key,
                header_text(request, CAPABILITY_HEADER),
                op,
                digest,
                registration.warehouse_id,
                self.clock.seconds(),
            )
        except CapabilityError as e:
            raise Refusal(403, "forbidden", str(e)) from None

    @asynccontextmanager
    async def writing(self, digest: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(digest, DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            # Released, the lock may have gone straight to a waiter that finished at once and
            # forgot it already (another writer may even hold a new one): only this one goes.
            if self._locks.get(digest) is lock and not lock.locked and not lock.waiting:
                del self._locks[digest]

    async def report(self, digest: str, size: int) -> None:
        """Tell the coordinator the object is here; a 503 refusal if it cannot be told."""
        try:
            await self.catalog.objects_stored([ObjectRef(digest=digest, size=size)])
        except (Unreachable, ApiError) as e:
            log.warn(
                "could not report {digest} to the coordinator: {error}", digest=digest, error=e
            )
            raise Refusal(
                503,
                "busy",
                f"the object is stored but the coordinator could not be told: {e}",
                retry_after=REPORT_RETRY_AFTER,
            ) from None

    def answer_later(
        self, request: Request, handler: Callable[[], Coroutine[Any, Any, tuple[int, object]]]
    ) -> int:
        """Run an async handler and answer with its (status, document) or its refusal."""
        responder = Responder(request)

        async def run() -> None:
            try:
                status, doc = await handler()
                body = json_body(request, status, doc)
            except Refusal as refusal:
                body = refusal_body(request, refusal)
            responder.send(body)

        def failed(failure: Failure) -> None:
            log.failure("{method} {uri} failed", failure, method=request.method, uri=request.uri)
            responder.send(refusal_body(request, Refusal(500, "internal", "the warehouse failed")))

        Deferred.fromCoroutine(run()).addErrback(failed)
        return NOT_DONE_YET


class _BadDigest(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return refusal_body(
            request,
            Refusal(400, "bad_request", "digest: not a SHA-256 digest (64 lowercase hex digits)"),
        )


class _ObjectsResource(Resource):
    def __init__(self, root: WarehouseResource) -> None:
        super().__init__()
        self._root = root

    def getChild(self, path: bytes, request: Request) -> Resource:
        try:
            digest = path.decode("ascii")
        except UnicodeDecodeError:
            return _BadDigest()
        if not DIGEST_PATTERN.match(digest):
            return _BadDigest()
        return _ObjectResource(self._root, digest)

    def render(self, request: Request) -> bytes:
        return refusal_body(request, Refusal(404, "not_found", "name an object: /objects/DIGEST"))


class _ObjectResource(JsonResource):
    """``/objects/{digest}``: read (GET, HEAD), write (PUT) and delete (DELETE) one object."""

    def __init__(self, root: WarehouseResource, digest: str) -> None:
        super().__init__()
        self._root = root
        self._digest = digest

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"upload":
            return _UploadStateResource(self._root, self._digest)
        if path == b"fetch":
            return _FetchResource(self._root, self._digest)
        return NotFound()

    def _stored_size(self, request: Request) -> int:
        self._root.authorize(request, capability.OP_GET, self._digest)
        try:
            size = self._root.store.size(self._digest)
        except FileNotFoundError:
            raise Refusal(404, "not_found", f"object {self._digest} is not here") from None
        request.setHeader(OBJECT_SIZE_HEADER.encode("ascii"), str(size).encode("ascii"))
        request.setHeader(b"accept-ranges", b"bytes")
        return size

    @refusing
    def render_HEAD(self, request: Request) -> bytes:
        size = self._stored_size(request)
        request.setHeader(b"content-length", str(size).encode("ascii"))
        return b""

    @refusing
    def render_GET(self, request: Request) -> bytes | int:
        root, digest = self._root, self._digest
        size = self._stored_size(request)
        range_header = header_text(request, "range")
        span = None if range_header is None else parse_range(range_header, size)
        network = root.network
        session = network.admit(request, "get", digest, header_text(request, SESSION_HEADER))
        request.setHeader(b"content-type", b"application/octet-stream")
        if span is None:
            first, last = 0, size - 1
        else:
            first, last = span
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {first}-{last}/{size}".encode("ascii"))
        length = last - first + 1

        def done() -> None:
            # The object's last packet is served: the session's slot is free.
            if last == size - 1:
                network.sessions.finish(session)

        if span is not None and length <= MAX_PACKET_SIZE:
            # One packet: read in a thread, with its CRC-32, maybe compressed.
            return serve_packet(
                request, root.store, root.blocking, network, digest, first, length, size, done
            )
        request.setHeader(b"content-length", str(length).encode("ascii"))
        request.notifyFinish().addCallbacks(lambda _: done(), lambda _: None)
        # Streamed as the client takes it: a whole-object GET of gigabytes neither blocks the
        # reactor nor fills the memory.
        stream(request, network, root.store.open_read(digest), first, length)
        return NOT_DONE_YET

    @refusing
    def render_DELETE(self, request: Request) -> bytes | int:
        """Delete the object, with a capability of op ``delete`` (only the coordinator signs
        one, for checkpoints superseded or of tasks that are over)."""
        root, digest = self._root, self._digest
        root.authorize(request, capability.OP_DELETE, digest)

        async def removed() -> tuple[int, object]:
            async with root.writing(digest):
                gone = await root.blocking(root.store.remove, digest)
            return 200, {"removed": gone}

        return root.answer_later(request, removed)

    @refusing
    def render_PUT(self, request: Request) -> bytes | int:
        root, digest = self._root, self._digest
        root.authorize(request, capability.OP_PUT, digest)
        offset = self._int_arg(request, "offset")
        size = self._int_arg(request, "size")
        packet_digest = header_text(request, PACKET_DIGEST_HEADER)
        if packet_digest is None or not DIGEST_PATTERN.match(packet_digest):
            raise Refusal(
                400, "bad_request", f"{PACKET_DIGEST_HEADER}: the packet's SHA-256 is needed"
            )
        session = root.network.admit(request, "put", digest, header_text(request, SESSION_HEADER))
        assert request.content is not None
        request.content.seek(0)
        body = request.content.read(MAX_PACKET_SIZE + 1)
        if len(body) > MAX_PACKET_SIZE:
            raise Refusal(
                400, "bad_request", f"packet larger than the limit of {MAX_PACKET_SIZE} bytes"
            )
        try:
            data = decode_packet(
                body, header_text(request, PACKET_ENCODING_HEADER), None, MAX_PACKET_SIZE
            )
        except CorruptPacket as e:
            raise Refusal(422, "corrupt_packet", f"packet at {offset}: {e}") from None
        started = getattr(request, "content_started", None)
        now = root.clock.seconds()
        root.network.meter.record(CLIENTS, 0, len(body), now - (started or now), None)
        if offset + len(data) > size:
            raise Refusal(
                400,
                "bad_request",
                f"offset: a packet of {len(data)} bytes at {offset} passes the size {size}",
            )
        if hashlib.sha256(data).hexdigest() != packet_digest:
            raise Refusal(422, "corrupt_packet", f"packet at {offset} does not match its digest")
        return root.answer_later(request, lambda: self._receive(offset, size, data, session))

    @staticmethod
    def _int_arg(request: Request, name: str) -> int:
        assert request.args is not None
        values = request.args.get(name.encode("ascii"))
        if not values:
            raise Refusal(400, "bad_request", f"{name}: missing query parameter")
        text = values[0].decode("ascii", "replace")
        if not text.isdigit() or len(text) > 19:
            raise Refusal(400, "bad_request", f"{name}: expected a non-negative integer")
        return int(text)

    async def _receive(
        self, offset: int, size: int, data: bytes, session: str
    ) -> tuple[int, object]:
        root, store, digest = self._root, self._root.store, self._digest
        stored: int | None
        async with root.writing(digest):
            if store.has(digest):
                stored, status = store.size(digest), 200
            else:
                stored, status = await self._write(offset, size, data), 201
        if stored is None:
            return 200, UploadState(offset=offset + len(data))
        root.network.sessions.finish(session)
        # Reported before the answer: the uploader's next step may be a job that needs it.
        await root.report(digest, stored)
        return status, UploadState(stored=True)

    async def _write(self, offset: int, size: int, data: bytes) -> int | None:
        """Write a packet (under the object's lock); the object's size once it is committed."""
        root, store, digest = self._root, self._root.store, self._digest
        if offset == 0 and len(data) == size:
            # The whole object in one packet (most outputs): one step in the file thread.
            try:
                return await root.blocking(store.store_whole, digest, data)
            except OffsetMismatch as e:
                raise Refusal(409, "offset", str(e), expected=e.expected) from None
            except DigestMismatch as e:
                raise Refusal(422, "digest_mismatch", f"{e}; the upload was discarded") from None
            except OSError as e:
                log.error("cannot write {digest}: {error}", digest=digest, error=e)
                raise Refusal(
                    507, "insufficient_storage", f"cannot store the object: {e}"
                ) from None
        held = store.partial_size(digest)
        if held > size:
            # Left by an upload that claimed another size: it cannot be a prefix of this one.
            await root.blocking(store.discard_partial, digest)
            held = 0
        if offset != held:
            raise Refusal(
                409,
                "offset",
                f"{held} bytes are held, the packet starts at {offset}",
                expected=held,
            )
        try:
            total = await root.blocking(store.write_packet, digest, offset, data)
        except OffsetMismatch as e:
            raise Refusal(409, "offset", str(e), expected=e.expected) from None
        except OSError as e:
            log.error("cannot write {digest}: {error}", digest=digest, error=e)
            raise Refusal(507, "insufficient_storage", f"cannot store the packet: {e}") from None
        if total < size:
            return None
        try:
            return await root.blocking(store.commit, digest)
        except DigestMismatch as e:
            raise Refusal(422, "digest_mismatch", f"{e}; the upload was discarded") from None


class _UploadStateResource(JsonResource):
    """``/objects/{digest}/upload``: where an interrupted upload resumes."""

    isLeaf = True

    def __init__(self, root: WarehouseResource, digest: str) -> None:
        super().__init__()
        self._root = root
        self._digest = digest

    @refusing
    def render_GET(self, request: Request) -> bytes | int:
        root, digest = self._root, self._digest
        root.authorize(request, capability.OP_PUT, digest)
        if not root.store.has(digest):
            # An upload starts (or resumes) here: admitted as a session, or told to wait.
            root.network.admit(request, "put", digest, header_text(request, SESSION_HEADER))
            return json_body(request, 200, UploadState(offset=root.store.partial_size(digest)))

        async def stored() -> tuple[int, object]:
            await root.report(digest, root.store.size(digest))
            return 200, UploadState(stored=True)

        return root.answer_later(request, stored)


class _HealthResource(JsonResource):
    """``/health``: alive, and how much room is left."""

    isLeaf = True

    def __init__(self, root: WarehouseResource) -> None:
        super().__init__()
        self._root = root

    def render_GET(self, request: Request) -> bytes:
        return json_body(request, 200, Health(ok=True, free=self._root.store.free_bytes()))


class _FetchResource(JsonResource):
    """``/objects/{digest}/fetch``: copy the object here from other warehouses."""

    isLeaf = True

    def __init__(self, root: WarehouseResource, digest: str) -> None:
        super().__init__()
        self._root = root
        self._digest = digest

    @refusing
    def render_POST(self, request: Request) -> bytes | int:
        root, digest = self._root, self._digest
        root.authorize(request, capability.OP_PUT, digest)
        if root.replicator is None:
            raise Refusal(503, "busy", "this warehouse cannot copy objects yet", retry_after=5.0)
        size, sources = _fetch_request(request)
        if root.replicator.fetch(digest, size, sources):
            return json_body(request, 202, FetchState(fetching=True))

        async def stored() -> tuple[int, object]:
            await root.report(digest, root.store.size(digest))
            return 200, FetchState(stored=True)

        return root.answer_later(request, stored)


def _fetch_request(request: Request) -> tuple[int, list[Source]]:
    try:
        fetch = decode(request.content.read() if request.content else b"", FetchRequest, "fetch")
    except ProtocolError as e:
        raise Refusal(400, "bad_request", str(e)) from None
    return fetch.size, list(fetch.sources)
