"""The warehouse's side of the communication manager's work: caps, sessions, meter, compression.

- **Caps**: ``--upload-cap`` bounds what the warehouse sends (answers to GETs), ``--download-cap``
  what it receives (PUT bodies, copies from other warehouses). Both are token buckets that hold
  one chunk: answers are written chunk by chunk as the cap earns them, bodies are read off the
  socket as fast as the cap allows (TCP then slows the sender down), so the rate is smooth.
- **Sessions**: how many transfers it serves at once (:class:`~.sessions.SessionTable`), the
  limit set by the coordinator's policy in each heartbeat's answer.
- **Meter**: what it served since the last heartbeat, reported in it.
- **Compression**: a downloader that accepts zstd gets compressed packets of the objects that
  compress; the verdict is kept per object (the first packets decide, see
  :class:`~xwch.transfer.packet.PacketCompressor`).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random as _random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from xwch.protocol.warehouse import HeartbeatAnswer
from xwch.protocol.wire import PACKET_ENCODING_ZSTD
from xwch.protocol.worker import Policy
from xwch.transfer.bucket import TokenBucket
from xwch.transfer.meter import InterfaceCounters, TransferMeter, host_interface_counters
from xwch.transfer.pacing import PacketPacer
from xwch.transfer.packet import PacketCompressor, chunks_check

from .answers import Refusal
from .objects import ObjectStore
from .sendfile import FileSpan
from .sessions import SessionTable, TooManySessions

log = Logger()

# What a warehouse's answers and bodies count against in its meter.
CLIENTS = "clients"


@dataclass(frozen=True)
class PacketAnswer:
    """One packet read from disk, ready to send: its bytes (maybe compressed) and checksum."""

    # The answer's body in the pieces it is to be written in (see :func:`read_packet_thd`).
    body: Sequence[bytes]
    # The checksum of the raw bytes and the header that carries it (CRC-32 or XXH3-64).
    check: str
    check_header: str
    encoding: str | None
    raw_size: int
    # The rest of the raw packet, after ``body``, to be sent from the object's file itself
    # (``sendfile``, see :mod:`.sendfile`); None when ``body`` is all of it.
    rest: FileSpan | None = None

    def release(self) -> None:
        """Close what the answer holds open (an answer never sent)."""
        if self.rest is not None:
            self.rest.close()


class CompressionVerdicts:
    """Per object, whether its packets are worth compressing, for the last objects served."""

    # Objects remembered: a verdict costs a few dozen bytes; a warehouse serves far fewer
    # objects at once.
    KEEP = 4096

    def __init__(self) -> None:
        self._verdicts: OrderedDict[str, PacketCompressor] = OrderedDict()

    def for_object(self, digest: str) -> PacketCompressor:
        compressor = self._verdicts.get(digest)
        if compressor is None:
            compressor = self._verdicts[digest] = PacketCompressor()
            while len(self._verdicts) > self.KEEP:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end(digest)
        return compressor


def read_packet_thd(
    store: ObjectStore,
    digest: str,
    first: int,
    length: int,
    compressor: PacketCompressor | None,
    check_header: str,
    from_file: bool = False,
) -> PacketAnswer:
    """Read ``length`` bytes of ``digest`` at ``first``, checksum them and maybe compress them.

    ``check_header``: the checksum to send, CRC-32 or XXH3-64 (if the downloader offered it).
    Runs in the warehouse's thread pool: file reads, checksums and zstd all release the GIL.

    The bytes are read as two pieces, the first of :data:`FIRST_PIECE` bytes: written after the
    headers it fills the transport's buffer, and the rest then goes to an empty buffer alone,
    which Twisted sends as it is, without joining it to anything (a copy of every byte saved;
    see :class:`~.pieces.PiecesProducer`). ``from_file`` (the connection takes ``sendfile``):
    the rest is not read at all but left in the file, open, for ``sendfile``, and checksummed
    where it lies (mapped, not copied).
    """
    f = store.open_read(digest)
    # Left open when the answer is to be sent from it: the answer's to close, once sent.
    left_open = False
    try:
        fd = f.fileno()
        head = _pread(fd, min(length, FIRST_PIECE), first)
        if from_file and length > len(head) == FIRST_PIECE:
            answer = _answer_from_file(f, first, length, head, compressor, check_header)
            left_open = answer.rest is not None
            return answer
        pieces = [head]
        if length > len(head) == FIRST_PIECE:
            pieces.append(_pread(fd, length - len(head), first + len(head)))
    finally:
        if not left_open:
            f.close()
    raw_size = sum(len(piece) for piece in pieces)
    check = chunks_check(check_header, pieces)
    if compressor is None or compressor.rests():
        # Not joined for nothing: the object's packets were found not to compress.
        return PacketAnswer(pieces, check, check_header, None, raw_size)
    body, encoding = compressor.encode(b"".join(pieces))
    sent = pieces if encoding is None else [body]
    return PacketAnswer(sent, check, check_header, encoding, raw_size)


def _answer_from_file(
    f: BinaryIO,
    first: int,
    length: int,
    head: bytes,
    compressor: PacketCompressor | None,
    check_header: str,
) -> PacketAnswer:
    """A packet whose first piece is ``head`` and whose rest stays in ``f`` (see above)."""
    fd = f.fileno()
    # A file shorter than the packet (a failing disk) gives a short packet, as a read would.
    length = min(length, max(len(head), os.fstat(fd).st_size - first))
    with _mapped(fd, first, length) as packet:
        check = chunks_check(check_header, (packet,))
        if compressor is not None and not compressor.rests():
            # A probe: compression is tried on the mapped bytes, never copied out.
            compressed = compressor.compress(packet)
            if compressed is not None:
                return PacketAnswer([compressed], check, check_header, PACKET_ENCODING_ZSTD, length)
    rest = FileSpan(f, first + len(head), length - len(head))
    return PacketAnswer([head], check, check_header, None, length, rest)


@contextmanager
def _mapped(fd: int, first: int, length: int) -> Iterator[memoryview]:
    """``length`` bytes of ``fd`` at ``first`` where they lie in the page cache (mapped), to be
    read without being copied out; valid only within the ``with``."""
    start = first - first % mmap.ALLOCATIONGRANULARITY
    with (
        mmap.mmap(fd, first + length - start, access=mmap.ACCESS_READ, offset=start) as mapped,
        memoryview(mapped) as view,
        view[first - start :] as packet,
    ):
        yield packet


def _pread(fd: int, n: int, at: int) -> bytes:
    """``n`` bytes at ``at``, fewer only at the end of the file (a read may stop short)."""
    data = os.pread(fd, n, at)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n and (more := os.pread(fd, n - got, at + got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# The first piece of a packet's answer: the transport's buffer limit, so that the headers and
# it pause the writer until the transport has sent them.
FIRST_PIECE: int = FileDescriptor.bufferSize


# What the read-ahead is keyed by: the object, the packet's first byte and length, whether
# compressed answers are accepted, the checksum header asked for, and whether the answer may be
# sent from the file.
PacketKey = tuple[str, int, int, bool, str, bool]


class ReadAhead:
    """The next packet of each download, read and checksummed before it is asked for.

    A downloader asks for packets in order, one after the other: while one packet is on the
    wire the warehouse's threads read the next, so its answer starts at once instead of after
    a read and a checksum (milliseconds a fast link would otherwise idle).
    """

    # Bytes kept ready at most (the oldest dropped first), and the largest packet worth reading
    # ahead: 64 MiB is eight 8 MiB packets, or one 1 MiB packet for each of 64 sessions.
    BUDGET = 64 * 1024 * 1024
    LARGEST = 8 * 1024 * 1024

    def __init__(self) -> None:
        self._ready: OrderedDict[PacketKey, Deferred[PacketAnswer]] = OrderedDict()
        self._bytes = 0

    def take(self, key: PacketKey) -> Deferred[PacketAnswer] | None:
        answer = self._ready.pop(key, None)
        if answer is not None:
            self._bytes -= key[2]
        return answer

    def put(self, key: PacketKey, answer: Deferred[PacketAnswer]) -> None:
        if key in self._ready:
            answer.addCallbacks(_release, lambda _: None)
            return
        self._ready[key] = answer
        self._bytes += key[2]
        while self._bytes > self.BUDGET:
            dropped_key, dropped = self._ready.popitem(last=False)
            self._bytes -= dropped_key[2]
            # Never asked for: its failure (the object gone meanwhile) interests nobody.
            dropped.addCallbacks(_release, lambda _: None)


def _release(answer: PacketAnswer) -> None:
    answer.release()


class WarehouseNetwork:
    """Caps, sessions, meter and compression verdicts of one warehouse."""

    # Chunks written or read between two looks at a cap: at most 1/40 s of the cap (one chunk
    # more or less in a second is 2.5%), between 4 KiB and 64 KiB.
    CAP_CHUNK_TIME = 1 / 40
    MIN_CHUNK = 4 * 1024
    MAX_CHUNK = 64 * 1024

    def __init__(
        self,
        clock: IReactorTime,
        upload_cap: float | None = None,
        download_cap: float | None = None,
        *,
        random: Callable[[], float] = _random.random,
        interface: InterfaceCounters | None = host_interface_counters,
    ) -> None:
        self.clock = clock
        self.upload = TokenBucket(upload_cap, clock)
        self.download = TokenBucket(download_cap, clock)
        self.sessions = SessionTable(clock, random=random)
        self.meter = TransferMeter(clock, interface)
        self.compression = CompressionVerdicts()
        self.read_ahead = ReadAhead()
        self.policy = Policy(max_transfers=self.sessions.limit)
        # The pacer of the warehouse's own transfers (copies): the same caps, the same policy.
        self.pacer = PacketPacer(
            self.policy, None, clock, upload_bucket=self.upload, download_bucket=self.download
        )

    # Caps

    def chunk_size(self, bucket: TokenBucket) -> int:
        """How many bytes to write or read between two looks at ``bucket``."""
        if bucket.rate is None:
            return self.MAX_CHUNK
        return max(self.MIN_CHUNK, min(self.MAX_CHUNK, int(bucket.rate * self.CAP_CHUNK_TIME)))

    # Sessions

    def admit(self, request: Request, op: str, digest: str, header: str | None) -> str:
        """The session of this request, admitted; a 503 busy Refusal when none is free."""
        key = header if header else self._anonymous_session(request, op, digest)
        try:
            self.sessions.admit(key)
        except TooManySessions as e:
            raise Refusal(503, "busy", str(e), retry_after=e.retry_after) from None
        return key

    @staticmethod
    def _anonymous_session(request: Request, op: str, digest: str) -> str:
        peer = request.getClientAddress()
        host = str(getattr(peer, "host", "unknown"))
        # Hashed: the table holds short keys whatever the address looks like.
        return hashlib.sha256(f"{host} {op} {digest}".encode()).hexdigest()[:32]

    # Life with the coordinator

    def apply_answer(self, answer: HeartbeatAnswer) -> None:
        """Apply the policy of a heartbeat's answer."""
        policy = answer.policy
        if policy != self.policy:
            log.info(
                "policy: packets of {size} bytes, {sleep:.3f} s apart, {sessions} sessions",
                size=policy.packet_size,
                sleep=policy.packet_sleep,
                sessions=policy.max_transfers,
            )
        self.policy = policy
        self.sessions.set_limit(policy.max_transfers)
        self.pacer.update(policy)
