"""Where a download's packets land: appended to its ``.part`` file and hashed, in order.

A packet comes as the pieces it arrived in: written with ``writev`` calls of at most 1 MiB
and hashed piece by piece, never joined (a copy of every byte saved). On a real reactor the
writing and the hashing of a packet run in two threads at once, while the next packet is on the
wire (file writes and hashlib release the GIL): on a fast link each costs about as much CPU as
receiving, and done one after the other they were the download's slowest step. One packet at a
time, so the order holds for both;
and every :attr:`PartSink.FLUSH_EVERY` bytes a flush to disk starts in the background, so the
fsync that must precede the final rename finds little left to do. On a test clock everything
runs inline.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from twisted.internet.defer import Deferred, execute
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool

if TYPE_CHECKING:
    from hashlib import _Hash

R = TypeVar("R")


class PartSink:
    """Appends packets to ``out`` and feeds them to ``hasher``, off the reactor when it can."""

    # A background flush every 64 MiB: the disk writes along, and a gigabyte download does not
    # end in a second-long fsync.
    FLUSH_EVERY = 64 * 1024 * 1024

    def __init__(
        self, out: BinaryIO, hasher: _Hash, reactor: IReactorTime, durable: bool = True
    ) -> None:
        # Not durable: no fsync at all; the file is complete once written (a cache's choice).
        self._durable = durable
        self._out = out
        self._hasher = hasher
        self._reactor = reactor
        self._threaded = IReactorThreads.providedBy(reactor)
        # The writing and the hashing of the last packet, while they run.
        self._pending: list[Deferred[None]] = []
        self._flushing: Deferred[None] | None = None
        self._unflushed = 0

    async def write(self, chunks: Sequence[bytes]) -> None:
        """Queue a packet, the bytes ``chunks`` make end to end; returns once the packet before
        it is written (one in flight)."""
        await self._settle_write()
        self._pending = [self._run(self._write_thd, chunks), self._run(self._hash_thd, chunks)]
        self._unflushed += sum(len(chunk) for chunk in chunks)
        if (
            self._durable
            and self._unflushed >= self.FLUSH_EVERY
            and self._flushing is None
            and self._threaded
        ):
            self._unflushed = 0
            flushing = self._flushing = self._run(self._flush_thd)

            def flushed(result: object) -> None:
                if self._flushing is flushing:
                    self._flushing = None

            # A background flush that fails is not fatal here: the final fsync of close() meets
            # the same disk and raises.
            flushing.addBoth(flushed)

    async def close(self) -> None:
        """Wait for every write and flush; then the file is on disk (fsync) if durable."""
        await self.drain()
        if self._durable:
            await self._run(self._flush_thd)
        else:
            await self._run(self._out.flush)

    async def drain(self) -> None:
        """Wait for what is in flight, without a final flush (a download that stops)."""
        try:
            await self._settle_write()
        finally:
            flushing, self._flushing = self._flushing, None
            if flushing is not None:
                await flushing

    async def _settle_write(self) -> None:
        pending, self._pending = self._pending, []
        failure: BaseException | None = None
        # Both are waited for, even when one fails: neither may still run once this returns.
        for d in pending:
            try:
                await d
            except BaseException as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def _write_thd(self, chunks: Sequence[bytes]) -> None:
        # Nothing goes through the file object's buffer: every write is here, straight to the
        # descriptor (the file is opened to append).
        self._out.flush()
        write_all(self._out.fileno(), chunks)

    def _hash_thd(self, chunks: Sequence[bytes]) -> None:
        for chunk in chunks:
            self._hasher.update(chunk)

    def _flush_thd(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())

    def _run(self, f: Callable[..., R], *args: object) -> Deferred[R]:
        if not self._threaded:
            return execute(f, *args)
        pool = cast(IReactorThreads, self._reactor).getThreadPool()
        return deferToThreadPool(cast(IReactorFromThreads, self._reactor), pool, f, *args)


# The most buffers one writev takes (Linux's UIO_MAXIOV).
IOV_MAX = getattr(os, "IOV_MAX", 1024)

# The most bytes one writev is given. Measured on ext4 (bench/disk_writes.py, and a 1 GiB
# loopback download, bench/loopback_vs_nginx.py): 8 MiB packets written with one writev each
# cost the kernel about twice the system time of the same bytes written 1 MiB at a time, and
# the download took 3.3 s instead of 2.0 s; on tmpfs the size makes no difference. Whether the
# bytes were just received (still in the CPU's cache) did not matter.
WRITE_MAX = 1024 * 1024


def write_all(fd: int, chunks: Sequence[bytes]) -> None:
    """Write every byte of ``chunks``, in order, in ``writev`` calls of at most
    :data:`WRITE_MAX` bytes (a piece bigger than that goes in slices)."""
    pending = deque(memoryview(chunk) for chunk in chunks if chunk)
    while pending:
        written = os.writev(fd, _batch(pending))
        if written <= 0:
            raise OSError(f"writev wrote {written} bytes")
        # A short write (a disk filling up, a signal) leaves the rest for the next call.
        while pending and written >= len(pending[0]):
            written -= len(pending.popleft())
        if written:
            pending[0] = pending[0][written:]


def _batch(pending: deque[memoryview]) -> list[memoryview]:
    """The first pieces of ``pending``, at most WRITE_MAX bytes and IOV_MAX pieces in all."""
    batch: list[memoryview] = []
    room = WRITE_MAX
    for piece in itertools.islice(pending, IOV_MAX):
        if len(piece) > room:
            if not batch:
                batch.append(piece[:room])
            break
        batch.append(piece)
        room -= len(piece)
    return batch
