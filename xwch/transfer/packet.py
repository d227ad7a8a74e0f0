"""One packet on the wire: its checksum, and its zstandard encoding where that pays.

Compression is decided by measuring, never by name: a sender tries the first packets; while
they shrink below :attr:`PacketCompressor.WORTH_RATIO` (and, on a link whose rate is known,
the time saved on the wire beats the time spent compressing) it keeps compressing; after
:attr:`PacketCompressor.PROBES` packets in a row that did not pay, it stops, and tries again
:attr:`PacketCompressor.REPROBE_AFTER` packets later (data changes along a file: a header,
then pixels). Checksums and digests are always of the uncompressed bytes.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Sequence

import xxhash
import zstandard

from xwch.errors import XwchError
from xwch.protocol.wire import PACKET_CRC_HEADER, PACKET_ENCODING_ZSTD, PACKET_XXH3_HEADER


class CorruptPacket(XwchError):
    """A packet's bytes do not match its checksum or do not decode: ask for it again."""


def packet_crc(data: bytes) -> str:
    """The CRC-32 of ``data``, 8 lowercase hex digits (the ``X-Xwch-Packet-Crc32`` header).

    A CRC rather than a SHA-256: it catches what a bad link or a bad memory does to a packet at
    3 GB/s, where SHA-256 would halve the speed of a fast transfer; the object's SHA-256, checked
    at the end, stays the authority on the content.
    """
    return f"{zlib.crc32(data):08x}"


def packet_xxh3(data: bytes) -> str:
    """The XXH3-64 of ``data``, 16 lowercase hex digits (the ``X-Xwch-Packet-Xxh3`` header).

    What a downloader that offers it gets instead of the CRC-32: as good against a damaged
    packet (64 bits, every bit mixed), and at 20 GB/s it no longer counts in the CPU a fast
    transfer costs each side (the CRC-32 was a fifth of the warehouse's).
    """
    return f"{xxhash.xxh3_64_intdigest(data):016x}"


# The per-packet checks, by the answer header that carries each, the preferred first.
PACKET_CHECK_HEADERS = (PACKET_XXH3_HEADER, PACKET_CRC_HEADER)


def chunks_check(header: str, chunks: Iterable[bytes | memoryview]) -> str:
    """The check named by ``header`` of the bytes ``chunks`` make end to end, never joined."""
    if header == PACKET_XXH3_HEADER:
        hasher = xxhash.xxh3_64()
        for chunk in chunks:
            hasher.update(chunk)
        return f"{hasher.intdigest():016x}"
    if header == PACKET_CRC_HEADER:
        crc = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
        return f"{crc:08x}"
    raise ValueError(f"no packet check is carried by {header}")


def decode_packet(
    body: bytes, encoding: str | None, length: int | None, limit: int | None = None
) -> bytes:
    """The packet's raw bytes; CorruptPacket if they cannot be, or are not ``length`` long.

    ``limit`` bounds what a packet of unknown ``length`` may decode to: a few bytes of zstd can
    claim gigabytes.
    """
    if encoding in (None, "", "identity"):
        data = body
    elif encoding == PACKET_ENCODING_ZSTD:
        bound = length if length is not None else limit
        try:
            declared = zstandard.frame_content_size(body)
            if bound is not None and declared > bound:
                raise CorruptPacket(f"a zstd packet claims {declared} bytes, more than {bound}")
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=bound or 0)
        except zstandard.ZstdError as e:
            raise CorruptPacket(f"a zstd packet does not decode: {e}") from None
    else:
        raise CorruptPacket(f"unknown packet encoding {encoding!r}")
    if length is not None and len(data) != length:
        raise CorruptPacket(f"a packet of {len(data)} bytes where {length} were expected")
    return data


def decode_chunks(chunks: Sequence[bytes], encoding: str | None, length: int) -> Sequence[bytes]:
    """As :func:`decode_packet`, for a body kept in pieces: raw pieces stay as they are."""
    if encoding in (None, "", "identity"):
        size = sum(len(chunk) for chunk in chunks)
        if size != length:
            raise CorruptPacket(f"a packet of {size} bytes where {length} were expected")
        return chunks
    return (decode_packet(b"".join(chunks), encoding, length),)


class PacketCompressor:
    """One sender's choice, packet by packet, to send zstandard or raw bytes."""

    # Compressed to less than this fraction of its size, a packet is worth sending compressed.
    WORTH_RATIO = 0.9
    # Packets in a row that did not pay before the sender stops trying.
    PROBES = 2
    # Packets sent raw before trying again.
    REPROBE_AFTER = 64
    # zstd's fastest standard level: hundreds of MB/s on text, and it gives up fast on noise.
    LEVEL = 1

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        # CPU time spent compressing is measured, not simulated: it decides whether it pays.
        self._timer = timer
        self._misses = 0
        self._skip = 0
        self.compressed_packets = 0
        self.raw_packets = 0

    def rests(self) -> bool:
        """Whether the next packet goes raw without a try (then counted as sent raw).

        For a sender that would have to assemble the packet only to try it.
        """
        if self._skip == 0:
            return False
        self._skip -= 1
        self.raw_packets += 1
        return True

    def encode(self, packet: bytes, link_rate: float | None = None) -> tuple[bytes, str | None]:
        """The bytes to send for ``packet`` and their encoding (None: raw).

        ``link_rate`` (bytes/s) is what the transfer gets from the path when known: on a link
        faster than compression saves time, packets go raw.
        """
        compressed = self.compress(packet, link_rate)
        if compressed is None:
            return packet, None
        return compressed, PACKET_ENCODING_ZSTD

    def compress(self, packet: bytes | memoryview, link_rate: float | None = None) -> bytes | None:
        """``packet`` compressed with zstd if that pays, else None (it goes raw), as
        :meth:`encode`; for a sender whose packet is not a bytes object (mapped from a file)."""
        if self._skip > 0 or not packet:
            self._skip = max(0, self._skip - 1)
            self.raw_packets += 1
            return None
        started = self._timer()
        compressed = zstandard.ZstdCompressor(level=self.LEVEL).compress(packet)
        spent = max(0.0, self._timer() - started)
        saved = len(packet) - len(compressed)
        pays = len(compressed) < self.WORTH_RATIO * len(packet)
        if pays and link_rate is not None and link_rate > 0:
            pays = saved / link_rate > spent
        if pays:
            self._misses = 0
            self.compressed_packets += 1
            return bytes(compressed)
        self._misses += 1
        if self._misses >= self.PROBES:
            self._misses = 0
            self._skip = self.REPROBE_AFTER
        self.raw_packets += 1
        return None
