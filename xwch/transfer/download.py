"""Download an object from warehouses in paced ranged GETs, resuming from a ``.part`` file.

The bytes land in ``<dest>.part`` and are hashed as they arrive; only a file whose SHA-256 is
the object's name is renamed to ``dest`` (after an fsync), so ``dest`` is never partial or wrong.
"""

from __future__ import annotations

import hashlib
import os
import random as _random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from xwch.errors import ApiError, DigestMismatch, Unreachable, XwchError
from xwch.protocol import CAPABILITY_HEADER, OBJECT_SIZE_HEADER, Source, require_digest
from xwch.transfer.backoff import Backoff
from xwch.transfer.digest import BLOCK_SIZE
from xwch.transfer.durable import fsync_directory
from xwch.transfer.exchange import exchange
from xwch.transfer.pacing import PacketPacer

log = Logger()

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Downloader:
    """One download; the knobs are class constants so tests and callers can name them."""

    # Rounds over all the sources without a single new byte before the download gives up.
    MAX_ROUNDS = 5
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 30.0

    def __init__(
        self,
        http: HTTPClient,
        sources: Sequence[Source],
        digest: str,
        size: int,
        dest: Path,
        pacer: PacketPacer,
        reactor: IReactorTime,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._http = http
        self._sources = list(sources)
        self._digest = require_digest(digest, "digest")
        self._size = size
        self._dest = dest
        self._part = dest.with_name(dest.name + ".part")
        self._pacer = pacer
        self._reactor = reactor
        self._backoff = Backoff(self.BACKOFF_BASE, self.BACKOFF_CAP, random)
        self._hasher = hashlib.sha256()
        self._offset = 0

    async def run(self) -> None:
        self._dest.parent.mkdir(parents=True, exist_ok=True)
        await self._resume()
        with self._part.open("ab") as out:
            if self._offset < self._size:
                await self._fetch_all(out)
            out.flush()
            os.fsync(out.fileno())
        if self._hasher.hexdigest() != self._digest:
            self._part.unlink(missing_ok=True)
            raise DigestMismatch(
                f"object {self._digest}: the {self._size} bytes received hash to "
                f"{self._hasher.hexdigest()}"
            )
        os.replace(self._part, self._dest)
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

    async def _fetch_all(self, out: BinaryIO) -> None:
        if not self._sources:
            raise Unreachable(f"object {self._digest}: no warehouse holds it")
        rounds = 0
        index = 0
        last_error: XwchError | None = None
        while self._offset < self._size:
            source = self._sources[index % len(self._sources)]
            before = self._offset
            try:
                await self._fetch_from(source, out)
                continue
            except (Unreachable, ApiError) as e:
                last_error = e
                log.warn(
                    "download of {digest} from {url} failed at {offset}: {error}",
                    digest=self._digest,
                    url=source.url,
                    offset=self._offset,
                    error=e,
                )
            if self._offset > before:
                rounds = 0
                self._backoff.reset()
            index += 1
            if index % len(self._sources) == 0:
                rounds += 1
                if rounds >= self.MAX_ROUNDS:
                    assert last_error is not None
                    raise last_error
                await deferLater(self._reactor, self._backoff.next_delay())

    async def _fetch_from(self, source: Source, out: BinaryIO) -> None:
        """Fetch packets from one warehouse until done; raise at its first failure."""
        url = f"{source.url.rstrip('/')}/objects/{self._digest}"
        capability = {CAPABILITY_HEADER.encode("ascii"): source.capability.encode("ascii")}
        while self._offset < self._size:
            length = min(self._pacer.policy.packet_size, self._size - self._offset)
            delay = self._pacer.delay_before(length)
            if delay > 0:
                await deferLater(self._reactor, delay)
            first, last = self._offset, self._offset + length - 1
            headers = dict(capability)
            headers[b"range"] = f"bytes={first}-{last}".encode("ascii")
            reply = await exchange(self._http, "GET", url, self._reactor, headers)
            if reply.code not in (200, 206):
                raise await reply.error()
            self._check_reply(reply.code, reply.header("content-range"), first, last)
            held = reply.header(OBJECT_SIZE_HEADER)
            if held is not None and held != str(self._size):
                raise ApiError(
                    reply.code,
                    "bad_response",
                    f"{source.url} holds {held} bytes of {self._digest}, not {self._size}",
                )
            if len(reply.body) != length:
                raise ApiError(
                    reply.code,
                    "bad_response",
                    f"{source.url} sent {len(reply.body)} bytes for a range of {length}",
                )
            out.write(reply.body)
            self._hasher.update(reply.body)
            self._offset += length

    def _check_reply(self, code: int, content_range: str | None, first: int, last: int) -> None:
        if code == 200:
            # A server that ignores Range sends the whole object: fine only if that was asked.
            if first == 0 and last == self._size - 1:
                return
            raise ApiError(code, "bad_response", "the warehouse ignored the Range header")
        match = _CONTENT_RANGE.match(content_range or "")
        if not match or (int(match[1]), int(match[2])) != (first, last):
            raise ApiError(
                code,
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
) -> None:
    """Download object ``digest`` of ``size`` bytes to ``dest``, from the first source that works.

    Resumes from ``<dest>.part`` if a previous try left one. Raises :class:`DigestMismatch`
    (and deletes the part file) if the bytes do not hash to ``digest``; the last source's
    :class:`Unreachable` or :class:`ApiError` when every source kept failing.
    """
    await Downloader(http, sources, digest, size, dest, pacer, reactor).run()
