"""Packets on the wire: compression where it pays (decided by measuring), checksums, decoding."""

from __future__ import annotations

import random

import pytest
import zstandard

from xwch.protocol.wire import PACKET_CRC_HEADER, PACKET_ENCODING_ZSTD, PACKET_XXH3_HEADER
from xwch.transfer.packet import (
    CorruptPacket,
    PacketCompressor,
    chunks_check,
    decode_chunks,
    decode_packet,
    packet_crc,
    packet_xxh3,
)

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


def test_a_sender_can_ask_whether_to_skip_the_try_before_assembling_a_packet() -> None:
    """While the compressor rests, rests() says so and counts the packet as sent raw; then it
    tries again, as encode() would."""
    c = PacketCompressor()
    assert not c.rests()
    for _ in range(PacketCompressor.PROBES):
        c.encode(NOISE)
    assert all(c.rests() for _ in range(PacketCompressor.REPROBE_AFTER))
    assert c.raw_packets == PacketCompressor.PROBES + PacketCompressor.REPROBE_AFTER
    assert not c.rests()
    assert c.encode(TEXT)[1] == PACKET_ENCODING_ZSTD


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


def test_the_faster_checksum_is_xxh3_64_in_hex() -> None:
    """XXH3-64 (seed 0) of the raw bytes, 16 hex digits: the reference values of xxHash."""
    assert packet_xxh3(b"") == "2d06800538d394c2"
    assert len(packet_xxh3(TEXT)) == 16


@pytest.mark.parametrize("header", [PACKET_XXH3_HEADER, PACKET_CRC_HEADER])
def test_a_packet_in_pieces_checks_as_the_bytes_it_makes(header: str) -> None:
    """A packet kept in the pieces it arrived in is checked as if joined; one flipped bit in
    any piece shows."""
    whole = {PACKET_XXH3_HEADER: packet_xxh3, PACKET_CRC_HEADER: packet_crc}[header](NOISE)
    pieces = [NOISE[:1], NOISE[1:5000], b"", NOISE[5000:]]
    assert chunks_check(header, pieces) == whole
    damaged = [*pieces[:3], bytes([pieces[3][0] ^ 1]) + pieces[3][1:]]
    assert chunks_check(header, damaged) != whole


def test_raw_pieces_stay_pieces_and_zstd_ones_are_decoded() -> None:
    """Raw pieces come back as they are (never joined) when they make the expected length;
    zstd pieces decode to the packet; a short packet is corrupt."""
    pieces = [NOISE[:100], NOISE[100:]]
    assert decode_chunks(pieces, None, len(NOISE)) is pieces
    body = zstandard.ZstdCompressor().compress(TEXT)
    assert decode_chunks([body[:7], body[7:]], PACKET_ENCODING_ZSTD, len(TEXT)) == (TEXT,)
    with pytest.raises(CorruptPacket, match="where"):
        decode_chunks(pieces, None, len(NOISE) + 1)
