"""Upload an object to a warehouse in paced packets, resuming where the warehouse stopped.

The warehouse is the authority on how much it holds: the upload asks it first (unless the object
fits in one packet), follows its ``409 offset`` answers, and after a broken connection asks again rather than trusting what it
last sent. Each packet carries its SHA-256 (of the raw bytes); a packet the warehouse finds
corrupt is sent again. Packets go compressed with zstandard while that pays
(:class:`~xwch.transfer.packet.PacketCompressor`). A warehouse too busy for a new transfer
answers 503: the upload waits as told, without counting it as a failure, up to
:attr:`Uploader.BUSY_PATIENCE`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from xwch.errors import ApiError, DigestMismatch, Unreachable
from xwch.protocol.codec import ProtocolError, decode
from xwch.protocol.objects import require_digest
from xwch.protocol.warehouse import UploadState
from xwch.protocol.wire import (
    CAPABILITY_HEADER,
    PACKET_DIGEST_HEADER,
    PACKET_ENCODING_HEADER,
    SESSION_HEADER,
)
from xwch.retry import Retry, RetryPolicy, equal_jitter
from xwch.transfer.exchange import Reply, exchange
from xwch.transfer.meter import is_loopback_url
from xwch.transfer.pacing import UPLOAD, PacketPacer
from xwch.transfer.packet import PacketCompressor

log = Logger()

# Bytes of the object from an offset: a file or memory.
Reader = Callable[[int, int], bytes]


class Uploader:
    """One upload; the knobs are class constants so tests and callers can name them."""

    # A packet the warehouse found corrupt is sent again, this many times in a row at most.
    MAX_PACKET_RETRIES = 5
    # Failures in a row (no answer) before the upload gives up.
    MAX_ATTEMPTS = 5
    # 409 answers in a row: each is progress by another uploader of the same object, but a
    # warehouse that keeps moving the offset is broken.
    MAX_CONFLICTS = 20
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 30.0
    # How long in all to wait for a warehouse that answers busy (see Downloader.BUSY_PATIENCE).
    BUSY_PATIENCE = 600.0

    def __init__(
        self,
        http: HTTPClient,
        url: str,
        digest: str,
        size: int,
        read: Reader,
        capability: str,
        pacer: PacketPacer,
        reactor: IReactorTime,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._http = http
        self._url = url.rstrip("/")
        self._object_url = f"{self._url}/objects/{require_digest(digest, 'digest')}"
        self._digest = digest
        self._size = size
        self._read = read
        self._capability = capability.encode("ascii")
        self._pacer = pacer
        self._reactor = reactor
        self._retry = Retry(retry_policy or equal_jitter(self.BACKOFF_BASE, self.BACKOFF_CAP))
        self._controller = pacer.new_controller()
        self._controller.local = is_loopback_url(url)
        self._compressor = PacketCompressor()
        self._session = secrets.token_hex(8).encode("ascii")
        self._failures = 0
        self._busy_waited = 0.0

    async def run(self) -> None:
        """Upload until the warehouse says the object is stored."""
        await self._pacer.slots.acquire()
        try:
            await self._run()
        finally:
            self._pacer.slots.release()

    async def _run(self) -> None:
        # An object of one packet is simply sent: the warehouse answers a held object with
        # "stored" and a partial one with where to resume (409), so asking first would only
        # add a round trip to every small output.
        fits = self._size <= self._pacer.packet_size(UPLOAD, self._controller)
        offset: int | None = 0 if fits else await self._held()
        corrupt = conflicts = 0
        while offset is not None:
            largest = self._pacer.packet_size(UPLOAD, self._controller)
            length = min(largest, self._size - offset)
            packet = self._read(offset, length)
            if len(packet) != length:
                raise DigestMismatch(
                    f"object {self._digest} changed while it was uploaded: "
                    f"{len(packet)} bytes at offset {offset}, expected {length}"
                )
            delay = self._pacer.delay_before(length, UPLOAD, self._controller)
            if delay > 0:
                await deferLater(self._reactor, delay)
            try:
                reply = await self._put(offset, packet)
            except Unreachable as e:
                await self._wait_after_failure(e, None)
                offset = await self._held()
                continue
            if reply.code in (200, 201):
                self._succeeded()
                corrupt = conflicts = 0
                offset = self._offset_of(reply)
                continue
            error = await reply.error()
            if error.status == 409 and error.code == "offset":
                conflicts += 1
                if conflicts > self.MAX_CONFLICTS:
                    raise error
                offset = self._checked_offset(error.details.get("expected"))
            elif error.status == 422 and error.code == "corrupt_packet":
                corrupt += 1
                if corrupt > self.MAX_PACKET_RETRIES:
                    raise error
                log.warn(
                    "packet at {offset} of {digest} arrived corrupt, sending it again",
                    offset=offset,
                    digest=self._digest,
                )
            elif error.status == 422 and error.code == "digest_mismatch":
                raise DigestMismatch(f"object {self._digest}: {error.message}")
            elif error.status == 503:
                await self._wait_after_failure(error, error.retry_after)
            else:
                raise error

    async def _held(self) -> int | None:
        """What the warehouse holds: an offset to resume at, or None when it is stored."""
        while True:
            try:
                reply = await exchange(
                    self._http, "GET", self._object_url + "/upload", self._reactor, self._headers()
                )
            except Unreachable as e:
                await self._wait_after_failure(e, None)
                continue
            if reply.code == 200:
                self._succeeded()
                return self._offset_of(reply)
            error = await reply.error()
            if error.status != 503:
                raise error
            await self._wait_after_failure(error, error.retry_after)

    async def _put(self, offset: int, packet: bytes) -> Reply:
        headers = self._headers()
        headers[PACKET_DIGEST_HEADER.encode("ascii")] = hashlib.sha256(packet).hexdigest().encode()
        headers[b"content-type"] = b"application/octet-stream"
        body, encoding = self._compressor.encode(packet, self._controller.peak_throughput)
        if encoding is not None:
            headers[PACKET_ENCODING_HEADER.encode("ascii")] = encoding.encode("ascii")
        url = f"{self._object_url}?offset={offset}&size={self._size}"
        meter = self._pacer.meter
        meter.sending(url, len(body))
        try:
            reply = await exchange(self._http, "PUT", url, self._reactor, headers, body)
        finally:
            # Answered or failed, the body has left (as much as will): the interface counted it.
            meter.sent(url, len(body))
        if reply.code in (200, 201):
            rtt = self._controller.record(len(body), reply.duration, None)
            meter.record(self._url, len(body), 0, reply.duration, rtt)
        return reply

    def _headers(self) -> dict[bytes, bytes]:
        return {
            CAPABILITY_HEADER.encode("ascii"): self._capability,
            SESSION_HEADER.encode("ascii"): self._session,
        }

    def _offset_of(self, reply: Reply) -> int | None:
        try:
            state = decode(reply.body, UploadState, "upload")
        except ProtocolError as e:
            raise ApiError(reply.code, "bad_response", f"the warehouse answered: {e}") from None
        return None if state.stored else self._checked_offset(state.offset)

    def _checked_offset(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self._size:
            raise ApiError(
                200, "bad_response", f"the warehouse gave offset {value!r} for {self._size} bytes"
            )
        return value

    def _succeeded(self) -> None:
        self._failures = 0
        self._busy_waited = 0.0
        self._retry.reset()

    async def _wait_after_failure(
        self, error: Unreachable | ApiError, retry_after: float | None
    ) -> None:
        busy = isinstance(error, ApiError) and error.status == 503
        # Busy is an answer, not a failure: wait as told, within the patience.
        delay = self._retry.next_delay(retry_after if busy else None)
        if busy:
            self._busy_waited += delay
            if self._busy_waited > self.BUSY_PATIENCE:
                raise error
        else:
            self._failures += 1
            if self._failures >= self.MAX_ATTEMPTS:
                if isinstance(error, ApiError):
                    raise error
                raise Unreachable(
                    f"upload of {self._digest} gave up after {self._failures} tries: {error}"
                )
        log.info(
            "upload of {digest}: {error}; trying again in {delay:.1f} s",
            digest=self._digest,
            error=error,
            delay=delay,
        )
        await deferLater(self._reactor, delay)


async def upload_file(
    http: HTTPClient,
    url: str,
    digest: str,
    size: int,
    path: Path,
    capability: str,
    pacer: PacketPacer,
    reactor: IReactorTime,
) -> None:
    """Upload the file at ``path`` as object ``digest`` to the warehouse at ``url``.

    Returns once the warehouse has stored it (and told the coordinator). Raises
    :class:`DigestMismatch` if the warehouse's hash of the whole disagrees, :class:`Unreachable`
    after repeated connection failures, :class:`ApiError` for any other refusal.
    """
    with path.open("rb") as f:

        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        await Uploader(http, url, digest, size, read, capability, pacer, reactor).run()


async def upload_bytes(
    http: HTTPClient,
    url: str,
    data: bytes,
    capability: str,
    pacer: PacketPacer,
    reactor: IReactorTime,
) -> str:
    """Upload ``data`` held in memory; returns its digest (the object's name)."""
    digest = hashlib.sha256(data).hexdigest()
    view = memoryview(data)

    def read(offset: int, length: int) -> bytes:
        return bytes(view[offset : offset + length])

    await Uploader(http, url, digest, len(data), read, capability, pacer, reactor).run()
    return digest
