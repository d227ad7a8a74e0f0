"""Packets on the wire: compression where it pays (decided by measuring), checksums, decoding."""

from __future__ import annotations

import random

import pytest
import zstandard

from xwch.protocol import PACKET_ENCODING_ZSTD
from xwch.transfer.packet import CorruptPacket, PacketCompressor, decode_packet, packet_crc

TEXT = b"".join(b"line %d of a log file that compresses well\n" % i for i in range(3000))
NOISE = random.Random(5).randbytes(len(TEXT))


def test_text_goes_compressed_and_comes_back_the_same() -> None:
    """Packets that compress travel as zstd and decode to the very same bytes."""
    c = PacketCompressor()
    body, encoding = c.encode(TEXT)
    assert encoding == PACKET_ENCODING_ZSTD
    assert len(body) < 0.2 * len(TEXT)
    assert decode_packet(body, encoding, len(TEXT)) == TEXT


def test_data_that_does_not_compress_is_sent_raw_and_not_tried_again_for_a_while() -> None:
    """After two packets that did not shrink, the sender stops trying for REPROBE_AFTER packets,
    then tries again (data changes along a file)."""
    c = PacketCompressor()
    tried = []
    for _ in range(PacketCompressor.PROBES + PacketCompressor.REPROBE_AFTER + 1):
        body, encoding = c.encode(NOISE)
        assert (body, encoding) == (NOISE, None)
    assert c.compressed_packets == 0
    body, encoding = c.encode(TEXT)
    tried.append(encoding)
    assert tried == [PACKET_ENCODING_ZSTD]


def test_compression_is_skipped_on_a_link_faster_than_it_saves() -> None:
    """On a link so fast that compressing takes longer than the bytes it saves would, packets go
    raw: it is measured, with the CPU time compressing took."""
    ticks = iter([0.0, 1.0] * 10)  # every compression "takes" one second
    c = PacketCompressor(timer=lambda: next(ticks))
    assert c.encode(TEXT, link_rate=1e9)[1] is None
    slow = PacketCompressor(timer=lambda: 0.0)
    assert slow.encode(TEXT, link_rate=1e3)[1] == PACKET_ENCODING_ZSTD


@pytest.mark.parametrize(
    ("body", "encoding", "length", "why"),
    [
        (b"not zstd", PACKET_ENCODING_ZSTD, 8, "does not decode"),
        (b"abc", None, 4, "3 bytes"),
        (b"abc", "gzip", 3, "unknown"),
        (zstandard.ZstdCompressor().compress(b"x" * 100), PACKET_ENCODING_ZSTD, 99, "claims"),
    ],
    ids=["garbage", "short", "unknown-encoding", "longer-than-said"],
)
def test_a_bad_packet_is_corrupt(body: bytes, encoding: str | None, length: int, why: str) -> None:
    """A packet that does not decode, or not to the expected length, is corrupt: ask again."""
    with pytest.raises(CorruptPacket, match=why):
        decode_packet(body, encoding, length)


def test_a_zstd_bomb_is_refused_before_it_is_decoded() -> None:
    """A few bytes claiming gigabytes are refused without allocating them."""
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (8 * 1024 * 1024))
    with pytest.raises(CorruptPacket, match="claims"):
        decode_packet(bomb, PACKET_ENCODING_ZSTD, None, limit=1024 * 1024)
    assert decode_packet(bomb, PACKET_ENCODING_ZSTD, None, limit=16 * 1024 * 1024) == (
        b"\0" * (8 * 1024 * 1024)
    )


def test_the_checksum_is_crc32_in_hex() -> None:
    """The packet checksum is the CRC-32 of the raw bytes, 8 hex digits."""
    assert packet_crc(b"123456789") == "cbf43926"
    assert packet_crc(b"") == "00000000"
