"""Download an object from warehouses in paced ranged GETs, resuming from a ``.part`` file.

Each packet is one ranged GET, the next one asked for as soon as a packet has arrived and been
checked, while it is written and hashed. Its answer carries the packet's XXH3-64, which the
downloader offers, or else its CRC-32 (and may come compressed with zstandard, which the
downloader offers too); a packet that does not match is asked for again. The packet stays in
the pieces it came off the socket in: checked, hashed and written without being joined.
The bytes land in ``<dest>.part`` and are hashed as they arrive; only a file whose SHA-256 is
the object's name is renamed to ``dest`` (after an fsync), so ``dest`` is never partial or wrong.
A warehouse too busy to take a new transfer answers 503: the downloader waits as told (with
jitter) without counting it as a failure, up to :attr:`Downloader.BUSY_PATIENCE`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from xwch.errors import ApiError, DigestMismatch, Unreachable, XwchError
from xwch.protocol.objects import Source, require_digest
from xwch.protocol.wire import (
    ACCEPT_PACKET_CHECK_HEADER,
    ACCEPT_PACKET_ENCODING_HEADER,
    CAPABILITY_HEADER,
    OBJECT_SIZE_HEADER,
    PACKET_CHECK_XXH3,
    PACKET_DIGEST_HEADER,
    PACKET_ENCODING_HEADER,
    PACKET_ENCODING_ZSTD,
    SESSION_HEADER,
)
from xwch.retry import Retry, RetryPolicy, equal_jitter
from xwch.transfer.digest import BLOCK_SIZE
from xwch.transfer.durable import fsync_directory
from xwch.transfer.exchange import Reply, exchange
from xwch.transfer.meter import is_loopback_url
from xwch.transfer.pacing import DOWNLOAD, PacketPacer
from xwch.transfer.packet import PACKET_CHECK_HEADERS, CorruptPacket, chunks_check, decode_chunks
from xwch.transfer.sink import PartSink

log = Logger()

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class _Asked:
    """A packet asked for: its place in the object, and the answer."""

    first: int
    length: int
    reply: Reply


class Downloader:
    """One download; the knobs are class constants so tests and callers can name them."""

    # Rounds over all the sources without a single new byte before the download gives up.
    MAX_ROUNDS = 5
    # A packet that arrives corrupt is asked for again, this many times in a row at most, before
    # the source is counted as failing.
    MAX_PACKET_RETRIES = 5
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 30.0
    # How long in all to wait for warehouses that answer busy: ten minutes, the order of a
    # task's run; a worker that waits longer had better give the attempt back.
    BUSY_PATIENCE = 600.0

    def __init__(
        self,
        http: HTTPClient,
        sources: Sequence[Source],
        digest: str,
        size: int,
        dest: Path,
        pacer: PacketPacer,
        reactor: IReactorTime,
        retry_policy: RetryPolicy | None = None,
        durable: bool = True,
    ) -> None:
        self._durable = durable
        self._http = http
        self._sources = list(sources)
        self._digest = require_digest(digest, "digest")
        self._size = size
        self._dest = dest
        self._part = dest.with_name(dest.name + ".part")
        self._pacer = pacer
        self._reactor = reactor
        self._retry = Retry(retry_policy or equal_jitter(self.BACKOFF_BASE, self.BACKOFF_CAP))
        self._controller = pacer.new_controller()
        self._session = secrets.token_hex(8)
        self._hasher = hashlib.sha256()
        self._offset = 0
        self._busy_waited = 0.0

    async def run(self) -> None:
        self._dest.parent.mkdir(parents=True, exist_ok=True)
        await self._pacer.slots.acquire()
        try:
            await self._run()
        finally:
            self._pacer.slots.release()

    async def _run(self) -> None:
        await self._resume()
        with self._part.open("ab") as out:
            sink = PartSink(out, self._hasher, self._reactor, durable=self._durable)
            try:
                if self._offset < self._size:
                    await self._fetch_all(sink)
            finally:
                # Never close the file under a write still running in a thread.
                await sink.drain()
            await sink.close()
        if self._hasher.hexdigest() != self._digest:
            self._part.unlink(missing_ok=True)
            raise DigestMismatch(
                f"object {self._digest}: the {self._size} bytes received hash to "
                f"{self._hasher.hexdigest()}"
            )
        os.replace(self._part, self._dest)
        if self._durable:
            fsync_directory(self._dest.parent)

    async def _resume(self) -> None:
        """Hash what a broken download left, so it continues from there."""
        try:
            held = self._part.stat().st_size
        except FileNotFoundError:
            return
        if held > self._size:
            # Not a prefix of this object: start over.
            self._part.unlink()
            return
        with self._part.open("rb") as f:
            while block := f.read(BLOCK_SIZE):
                self._hasher.update(block)
                self._offset += len(block)
                # A part file may be gigabytes: let the reactor breathe between blocks.
                await deferLater(self._reactor, 0)
        log.info(
            "resuming download of {digest} at {offset} of {size} bytes",
            digest=self._digest,
            offset=self._offset,
            size=self._size,
        )

    async def _fetch_all(self, sink: PartSink) -> None:
        if not self._sources:
            raise Unreachable(f"object {self._digest}: no warehouse holds it")
        rounds = 0
        index = 0
        last_error: XwchError | None = None
        # Within a round over the sources: did any fail other than by being busy, and how long
        # did the busy ones ask to wait.
        failed = False
        retry_after = 0.0
        while self._offset < self._size:
            source = self._sources[index % len(self._sources)]
            before = self._offset
            try:
                await self._fetch_from(source, sink)
                continue
            except (Unreachable, ApiError) as e:
                last_error = e
                if isinstance(e, ApiError) and e.status == 503:
                    retry_after = max(retry_after, e.retry_after or 0.0)
                else:
                    failed = True
                log.warn(
                    "download of {digest} from {url} failed at {offset}: {error}",
                    digest=self._digest,
                    url=source.url,
                    offset=self._offset,
                    error=e,
                )
            if self._offset > before:
                rounds = 0
                self._retry.reset()
            index += 1
            if index % len(self._sources) != 0:
                continue
            # Every source busy: wait as told (the longest any asked), within the patience.
            delay = self._retry.next_delay(None if failed else retry_after)
            if failed:
                rounds += 1
                if rounds >= self.MAX_ROUNDS:
                    assert last_error is not None
                    raise last_error
            else:
                self._busy_waited += delay
                if self._busy_waited > self.BUSY_PATIENCE:
                    assert last_error is not None
                    raise last_error
            failed, retry_after = False, 0.0
            await deferLater(self._reactor, delay)

    async def _fetch_from(self, source: Source, sink: PartSink) -> None:
        """Fetch packets from one warehouse until done; raise at its first failure."""
        url = f"{source.url.rstrip('/')}/objects/{self._digest}"
        self._controller.local = is_loopback_url(source.url)
        headers = {
            CAPABILITY_HEADER.encode("ascii"): source.capability.encode("ascii"),
            SESSION_HEADER.encode("ascii"): self._session.encode("ascii"),
            ACCEPT_PACKET_ENCODING_HEADER.encode("ascii"): PACKET_ENCODING_ZSTD.encode("ascii"),
            ACCEPT_PACKET_CHECK_HEADER.encode("ascii"): PACKET_CHECK_XXH3.encode("ascii"),
        }
        corrupt = 0
        # The next packet's request, sent while this one is written and hashed: the link does
        # not idle through that (on loopback about 4 ms a packet of 8 MiB, waiting for the
        # write and the hash of the packet before).
        ahead: Deferred[_Asked] | None = None
        try:
            while self._offset < self._size:
                asked = await (ahead or self._ask(url, headers, self._offset))
                ahead = None
                first, length, reply = asked.first, asked.length, asked.reply
                if reply.code not in (200, 206):
                    raise await reply.error()
                self._check_reply(source, reply, first, first + length - 1)
                received = reply.size
                rtt = self._controller.record(received, reply.duration, reply.first_byte)
                self._pacer.meter.record(source.url, 0, received, reply.duration, rtt)
                try:
                    data = self._packet_of(reply, length)
                except CorruptPacket as e:
                    corrupt += 1
                    if corrupt > self.MAX_PACKET_RETRIES:
                        raise ApiError(reply.code, "corrupt_packet", str(e)) from None
                    log.warn(
                        "packet at {offset} of {digest} from {url} arrived corrupt ({error}); "
                        "asking for it again",
                        offset=first,
                        digest=self._digest,
                        url=source.url,
                        error=e,
                    )
                    continue
                corrupt = 0
                self._busy_waited = 0.0
                if first + length < self._size:
                    ahead = self._ask(url, headers, first + length)
                await sink.write(data)
                self._offset += length
        finally:
            if ahead is not None:
                # The download stops (a failed write): the packet asked for is not wanted.
                ahead.addErrback(lambda _: None)
                ahead.cancel()

    def _ask(self, url: str, headers: dict[bytes, bytes], first: int) -> Deferred[_Asked]:
        """Ask for the packet at ``first`` once the pacer allows it; fires with its answer."""

        async def asking() -> _Asked:
            largest = self._pacer.packet_size(DOWNLOAD, self._controller)
            length = min(largest, self._size - first)
            delay = self._pacer.delay_before(length, DOWNLOAD, self._controller)
            if delay > 0:
                await deferLater(self._reactor, delay)
            packet_headers = dict(headers)
            packet_headers[b"range"] = f"bytes={first}-{first + length - 1}".encode("ascii")
            reply = await exchange(
                self._http,
                "GET",
                url,
                self._reactor,
                packet_headers,
                chunked=True,
                arrived=lambda size: self._pacer.meter.on_wire(url, 0, size),
            )
            return _Asked(first, length, reply)

        return Deferred.fromCoroutine(asking())

    @staticmethod
    def _packet_of(reply: Reply, length: int) -> Sequence[bytes]:
        """The packet's raw bytes (in pieces), checked against the checksums the answer carries.

        One check is enough: XXH3-64 when the warehouse knows it, else its CRC-32 (a warehouse
        older than the XXH3 header sends only that).
        """
        chunks = decode_chunks(reply.chunks, reply.header(PACKET_ENCODING_HEADER), length)
        for header in PACKET_CHECK_HEADERS:
            sent = reply.header(header)
            if sent is None:
                continue
            check = chunks_check(header, chunks)
            if sent.strip().lower() != check:
                raise CorruptPacket(f"{header} {check}, the warehouse sent {sent}")
            break
        sha = reply.header(PACKET_DIGEST_HEADER)
        if sha is not None:
            hasher = hashlib.sha256()
            for chunk in chunks:
                hasher.update(chunk)
            if sha.strip().lower() != hasher.hexdigest():
                raise CorruptPacket("the packet does not match its SHA-256")
        return chunks

    def _check_reply(self, source: Source, reply: Reply, first: int, last: int) -> None:
        held = reply.header(OBJECT_SIZE_HEADER)
        if held is not None and held != str(self._size):
            raise ApiError(
                reply.code,
                "bad_response",
                f"{source.url} holds {held} bytes of {self._digest}, not {self._size}",
            )
        if reply.code == 200:
            # A server that ignores Range sends the whole object: fine only if that was asked.
            if first == 0 and last == self._size - 1:
                return
            raise ApiError(reply.code, "bad_response", "the warehouse ignored the Range header")
        content_range = reply.header("content-range")
        match = _CONTENT_RANGE.match(content_range or "")
        if not match or (int(match[1]), int(match[2])) != (first, last):
            raise ApiError(
                reply.code,
                "bad_response",
                f"asked bytes {first}-{last}, got Content-Range {content_range!r}",
            )


async def download_object(
    http: HTTPClient,
    sources: Sequence[Source],
    digest: str,
    size: int,
    dest: Path,
    pacer: PacketPacer,
    reactor: IReactorTime,
    durable: bool = True,
) -> None:
    """Download object ``digest`` of ``size`` bytes to ``dest``, from the first source that works.

    ``durable``: the bytes reach the disk (fsync) before ``dest`` names them, so even a power
    loss leaves no wrong object. A cache that can tell when a crash may have cost it unflushed
    bytes, and then drops what it held (the worker's), passes False and saves the fsync.

    Resumes from ``<dest>.part`` if a previous try left one. Raises :class:`DigestMismatch`
    (and deletes the part file) if the bytes do not hash to ``digest``; the last source's
    :class:`Unreachable` or :class:`ApiError` when every source kept failing.
    """
    await Downloader(http, sources, digest, size, dest, pacer, reactor, durable=durable).run()
