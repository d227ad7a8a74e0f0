"""The warehouse's network side: packet checksums and compression, transfer sessions (admission
control), caps on what it sends and receives, and its heartbeat's report and policy."""

from __future__ import annotations

import hashlib
import os
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
import xxhash
import zstandard
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.fakes.warehouse import InMemoryWarehouse, result_of
from tests.unit.test_warehouse import (
    INTERVAL,
    REGISTER,
    WAREHOUSE_ID,
    answer,
    call,
    make_service,
)
from xwch import capability
from xwch.protocol.codec import ProtocolError, decode
from xwch.protocol.warehouse import HeartbeatAnswer
from xwch.protocol.wire import (
    ACCEPT_PACKET_CHECK_HEADER,
    ACCEPT_PACKET_ENCODING_HEADER,
    CAPABILITY_HEADER,
    PACKET_CRC_HEADER,
    PACKET_DIGEST_HEADER,
    PACKET_ENCODING_HEADER,
    PACKET_XXH3_HEADER,
    SESSION_HEADER,
)
from xwch.warehouse.node import _QuietSite
from xwch.warehouse.sessions import SessionTable, TooManySessions
from xwch.warehouse.traffic import FIRST_PIECE, WarehouseNetwork, read_packet_thd

TEXT = b"".join(b"%05d compressible text\n" % i for i in range(200))
NOISE = random.Random(9).randbytes(4200)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wh(tmp_path: Path, clock: Clock) -> InMemoryWarehouse:
    warehouse = InMemoryWarehouse(tmp_path / "warehouse", clock)
    for data in (TEXT, NOISE):
        digest = hashlib.sha256(data).hexdigest()
        warehouse.store.write_packet(digest, 0, data)
        warehouse.store.commit(digest)
    return warehouse


def get(
    wh: InMemoryWarehouse, data: bytes, rng: str | None, **headers: str
) -> tuple[int, Any, Any]:
    digest = hashlib.sha256(data).hexdigest()
    h = {CAPABILITY_HEADER: wh.capability(capability.OP_GET, digest), **headers}
    if rng is not None:
        h["Range"] = rng
    return answer(call(wh, "GET", f"/objects/{digest}", h))


def header(headers: Any, name: str) -> str | None:
    values = headers.getRawHeaders(name.encode())
    return values[0].decode() if values else None


# -- packets -------------------------------------------------------------------------------


def test_a_packet_comes_with_its_crc(wh: InMemoryWarehouse) -> None:
    """Each ranged GET answer carries the CRC-32 of its bytes, so a damaged packet is caught."""
    code, headers, body = get(wh, NOISE, "bytes=1000-1999")
    assert code == 206
    assert body == NOISE[1000:2000]
    assert header(headers, PACKET_CRC_HEADER) == f"{zlib.crc32(NOISE[1000:2000]):08x}"
    assert header(headers, PACKET_ENCODING_HEADER) is None


def test_a_packet_read_short_by_the_disk_is_read_to_its_end(
    wh: InMemoryWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that stops short (a signal, a network file system) is followed by the rest: the
    packet goes out whole, with the checksum of all its bytes."""
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: real_pread(fd, min(n, 700), at))
    code, headers, body = get(wh, NOISE, "bytes=100-3999")
    assert (code, body) == (206, NOISE[100:4000])
    assert header(headers, PACKET_CRC_HEADER) == f"{zlib.crc32(NOISE[100:4000]):08x}"


def test_a_large_packet_is_answered_in_two_pieces_that_make_it_whole(
    wh: InMemoryWarehouse,
) -> None:
    """A packet past the transport's buffer limit is read as a first piece of that size and the
    rest (sent without a copy); the answer is every byte of the range, with its checksum."""
    big = random.Random(4).randbytes(3 * FIRST_PIECE + 5)
    digest = hashlib.sha256(big).hexdigest()
    wh.store.write_packet(digest, 0, big)
    wh.store.commit(digest)
    answer = read_packet_thd(wh.store, digest, 3, len(big) - 3, None, PACKET_XXH3_HEADER)
    assert [len(piece) for piece in answer.body] == [FIRST_PIECE, len(big) - 3 - FIRST_PIECE]
    assert answer.check == f"{xxhash.xxh3_64_intdigest(big[3:]):016x}"
    code, headers, body = get(wh, big, f"bytes=3-{len(big) - 1}")
    assert (code, body) == (206, big[3:])
    assert header(headers, PACKET_CRC_HEADER) == f"{zlib.crc32(big[3:]):08x}"


def test_a_packet_comes_with_its_xxh3_to_who_offers_it(wh: InMemoryWarehouse) -> None:
    """A downloader that offers XXH3-64 gets it in place of the CRC-32, of the raw bytes even
    when the body is compressed; one that does not still gets the CRC-32."""
    offer = {ACCEPT_PACKET_CHECK_HEADER: "crc32c, xxh3-64", ACCEPT_PACKET_ENCODING_HEADER: "zstd"}
    _, headers, body = get(wh, NOISE, "bytes=1000-1999", **offer)
    assert body == NOISE[1000:2000]
    assert header(headers, PACKET_XXH3_HEADER) == f"{xxhash.xxh3_64_intdigest(body):016x}"
    assert header(headers, PACKET_CRC_HEADER) is None
    _, headers, body = get(wh, TEXT, "bytes=0-2999", **offer)
    assert header(headers, PACKET_ENCODING_HEADER) == "zstd"
    assert header(headers, PACKET_XXH3_HEADER) == f"{xxhash.xxh3_64_intdigest(TEXT[:3000]):016x}"
    # The next packet was read ahead with the check of this downloader: another one, asking
    # for the same packet without the offer, still gets a CRC-32.
    _, headers, _ = get(wh, NOISE, "bytes=2000-2999", **{ACCEPT_PACKET_ENCODING_HEADER: "zstd"})
    assert header(headers, PACKET_CRC_HEADER) == f"{zlib.crc32(NOISE[2000:3000]):08x}"
    assert header(headers, PACKET_XXH3_HEADER) is None


def test_a_packet_is_compressed_only_for_who_accepts_it_and_only_if_it_pays(
    wh: InMemoryWarehouse,
) -> None:
    """Text goes zstd to a downloader that accepts it; noise never does; a plain client never
    gets zstd. The CRC is always of the raw bytes."""
    accept = {ACCEPT_PACKET_ENCODING_HEADER: "zstd"}
    _, headers, body = get(wh, TEXT, "bytes=0-2999", **accept)
    assert header(headers, PACKET_ENCODING_HEADER) == "zstd"
    raw = zstandard.ZstdDecompressor().decompress(body)
    assert raw == TEXT[:3000]
    assert header(headers, PACKET_CRC_HEADER) == f"{zlib.crc32(raw):08x}"
    assert len(body) < 3000
    _, headers, body = get(wh, TEXT, "bytes=0-2999")
    assert header(headers, PACKET_ENCODING_HEADER) is None and body == TEXT[:3000]
    _, headers, _ = get(wh, NOISE, "bytes=0-999", **accept)
    assert header(headers, PACKET_ENCODING_HEADER) is None


def test_a_whole_object_get_streams_without_a_checksum(wh: InMemoryWarehouse) -> None:
    """A GET without Range (curl, a browser) streams the object; it checks the SHA-256 itself."""
    code, headers, body = get(wh, NOISE, None)
    assert (code, body) == (200, NOISE)
    assert header(headers, PACKET_CRC_HEADER) is None


def test_a_compressed_put_is_stored_as_its_raw_bytes(wh: InMemoryWarehouse) -> None:
    """A PUT body in zstd is decoded, checked against the raw bytes' digest, and stored raw."""
    data = TEXT * 2
    digest = hashlib.sha256(data).hexdigest()
    body = zstandard.ZstdCompressor().compress(data)
    headers = {
        CAPABILITY_HEADER: wh.capability(capability.OP_PUT, digest),
        PACKET_DIGEST_HEADER: digest,
        PACKET_ENCODING_HEADER: "zstd",
    }
    code, _, doc = answer(
        call(wh, "PUT", f"/objects/{digest}?offset=0&size={len(data)}", headers, body)
    )
    assert (code, doc) == (201, {"stored": True})
    with wh.store.open_read(digest) as f:
        assert f.read() == data


def test_a_zstd_bomb_put_is_refused(wh: InMemoryWarehouse) -> None:
    """A tiny PUT claiming more than a packet's limit once decoded is refused, not decoded."""
    from xwch.warehouse import routes

    data = b"\0" * (routes.MAX_PACKET_SIZE + 1)
    digest = hashlib.sha256(data).hexdigest()
    headers = {
        CAPABILITY_HEADER: wh.capability(capability.OP_PUT, digest),
        PACKET_DIGEST_HEADER: digest,
        PACKET_ENCODING_HEADER: "zstd",
    }
    body = zstandard.ZstdCompressor().compress(data)
    code, _, doc = answer(
        call(wh, "PUT", f"/objects/{digest}?offset=0&size={len(data)}", headers, body)
    )
    assert (code, doc["error"]) == (422, "corrupt_packet")


# -- sessions ------------------------------------------------------------------------------


def test_beyond_its_session_limit_a_warehouse_answers_busy_with_retry_after(
    wh: InMemoryWarehouse,
) -> None:
    """A warehouse serving all the transfers it may refuses a new one with 503 busy and a
    jittered Retry-After; a transfer already admitted goes on."""
    wh.resource.network.sessions.set_limit(1)
    code, _, _ = get(wh, NOISE, "bytes=0-999", **{SESSION_HEADER: "first"})
    assert code == 206
    code, headers, doc = get(wh, NOISE, "bytes=0-999", **{SESSION_HEADER: "second"})
    assert (code, doc["error"]) == (503, "busy")
    assert SessionTable.RETRY_AFTER <= doc["retry_after"] <= 2 * SessionTable.RETRY_AFTER
    assert int(header(headers, "retry-after") or 0) >= 1
    code, _, _ = get(wh, NOISE, "bytes=1000-4199", **{SESSION_HEADER: "first"})
    assert code == 206
    # The first session's last packet freed its slot.
    code, _, _ = get(wh, NOISE, "bytes=0-999", **{SESSION_HEADER: "second"})
    assert code == 206


def test_an_idle_session_frees_its_slot(clock: Clock) -> None:
    """A transfer that stopped without its last packet stops counting after IDLE_TIMEOUT."""
    table = SessionTable(clock, limit=1, random=lambda: 0.0)
    table.admit("gone")
    with pytest.raises(TooManySessions, match=r"retry after 2\.0"):
        table.admit("new")
    clock.advance(SessionTable.IDLE_TIMEOUT + 1)
    table.admit("new")
    assert table.status() == {"active": 1, "limit": 1, "refused": 1}


def test_requests_without_a_session_header_count_per_peer_and_object(
    wh: InMemoryWarehouse,
) -> None:
    """A plain client's requests for one object count as one session; another object is
    another session."""
    wh.resource.network.sessions.set_limit(1)
    assert get(wh, NOISE, "bytes=0-9")[0] == 206
    assert get(wh, NOISE, "bytes=10-19")[0] == 206
    assert get(wh, TEXT, "bytes=0-9")[0] == 503


def test_an_upload_is_admitted_when_it_asks_where_to_resume(wh: InMemoryWarehouse) -> None:
    """An upload's first question (GET /upload) takes a session, or is told to come back."""
    wh.resource.network.sessions.set_limit(1)
    wh.resource.network.sessions.admit("busy")
    digest = hashlib.sha256(b"new").hexdigest()
    headers = {CAPABILITY_HEADER: wh.capability(capability.OP_PUT, digest)}
    code, _, doc = answer(call(wh, "GET", f"/objects/{digest}/upload", headers))
    assert (code, doc["error"]) == (503, "busy")


# -- caps ----------------------------------------------------------------------------------


def test_an_upload_cap_paces_what_the_warehouse_sends(wh: InMemoryWarehouse, clock: Clock) -> None:
    """Under a 4000 bytes/s upload cap, a 4000-byte answer is not all out before a second of
    clock time has passed; then it is."""
    wh.resource.network.upload.set_rate(4000.0)
    digest = hashlib.sha256(NOISE).hexdigest()
    headers = {CAPABILITY_HEADER: wh.capability(capability.OP_GET, digest)}
    d = call(wh, "GET", f"/objects/{digest}", headers)
    wh.http.flush()
    clock.advance(0.9)
    wh.http.flush()
    assert not d.called
    clock.advance(0.2)
    wh.http.flush()
    code, _, body = result_of(d)
    assert (code, body) == (200, NOISE)


def test_a_download_cap_reads_bodies_no_faster_than_it(wh: InMemoryWarehouse, clock: Clock) -> None:
    """Under a download cap the warehouse stops reading a body off the socket until the cap has
    earned it, then reads on: the sender is slowed by TCP itself."""
    wh.resource.network.download.set_rate(8192.0)
    site = _QuietSite(wh.resource)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    data = NOISE * 2
    channel.makeConnection(transport)
    digest = hashlib.sha256(data).hexdigest()
    head = (
        f"PUT /objects/{digest}?offset=0&size={len(data)} HTTP/1.1\r\n"
        f"Host: w\r\n{CAPABILITY_HEADER}: {wh.capability(capability.OP_PUT, digest)}\r\n"
        f"{PACKET_DIGEST_HEADER}: {digest}\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    clock.advance(5.0)  # idle: the bucket holds one chunk (4 KiB) of credit
    channel.dataReceived(head + data[:2000])
    channel.dataReceived(data[2000:4000])
    assert transport.producerState == "producing"
    channel.dataReceived(data[4000:4200])
    assert transport.producerState == "paused"  # ahead of the cap: stop reading
    clock.advance(0.1)
    assert transport.producerState == "producing"
    channel.dataReceived(data[4200:])
    assert b"201 Created" in transport.value()
    channel.connectionLost(None)


def test_packets_under_a_cap_are_small_chunks(clock: Clock) -> None:
    """Under a cap the warehouse writes and reads chunks of 1/40 s of it, at least 4 KiB."""
    network = WarehouseNetwork(clock, upload_cap=1_000_000.0, interface=None)
    assert network.chunk_size(network.upload) == 25_000
    assert network.chunk_size(network.download) == WarehouseNetwork.MAX_CHUNK


# -- the heartbeat -------------------------------------------------------------------------


def test_the_heartbeat_reports_traffic_and_takes_its_session_limit(tmp_path: Path) -> None:
    """Each heartbeat tells the coordinator the traffic and sessions since the last; the policy
    in its answer sets how many transfers the warehouse serves at once."""
    reactor, coordinator, service = make_service(tmp_path)
    beat = f"/api/v1/warehouses/{WAREHOUSE_ID}/heartbeat"
    policy = {"packet_size": 65536, "packet_sleep": 0.1, "max_transfers": 7}
    coordinator.script[beat] = [{"policy": policy}, {}]
    service.startService()
    result_of(service.when_registered())
    reactor.advance(INTERVAL)
    [(_, _, body)] = [c for c in coordinator.calls if c[1] == beat]
    assert set(body["transfers"]) == {"seconds", "peers", "interface"}
    assert body["sessions"] == {"active": 0, "limit": SessionTable.DEFAULT_LIMIT, "refused": 0}
    network = service.resource.network
    assert network.sessions.limit == 7
    assert network.pacer.policy.packet_sleep == 0.1
    reactor.advance(INTERVAL)  # an answer that does not fit (no policy) changes nothing
    assert network.sessions.limit == 7
    assert [c[1] for c in coordinator.calls].count(REGISTER) == 1
    result_of(service.stopService())


def test_a_malformed_policy_is_refused_naming_the_field() -> None:
    """A heartbeat's answer that does not fit is refused as it is decoded, naming the field."""
    with pytest.raises(ProtocolError, match=r"HeartbeatAnswer.policy.packet_size: expected `int`"):
        decode(b'{"policy": {"packet_size": "big"}}', HeartbeatAnswer, "HeartbeatAnswer")


def test_the_next_packet_is_read_ahead(wh: InMemoryWarehouse) -> None:
    """While a packet goes out, the warehouse reads the next one of the same size, so its
    answer starts at once; read-ahead packets take at most ReadAhead.BUDGET bytes."""
    read_ahead = wh.resource.network.read_ahead
    digest = hashlib.sha256(NOISE).hexdigest()
    get(wh, NOISE, "bytes=0-999")
    ready = read_ahead.take((digest, 1000, 1000, False, PACKET_CRC_HEADER, False))
    assert ready is not None and b"".join(result_of(ready).body) == NOISE[1000:2000]
    get(wh, NOISE, "bytes=3000-4199")  # the last packet: nothing follows it
    assert read_ahead.take((digest, 4200, 1200, False, PACKET_CRC_HEADER, False)) is None
    from xwch.warehouse.traffic import PacketAnswer, ReadAhead

    small = ReadAhead()
    small.BUDGET = 2500
    for n in range(3):
        small.put(
            (digest, n * 1000, 1000, False, PACKET_CRC_HEADER, False),
            wh.resource.blocking(lambda: PacketAnswer([], "", PACKET_CRC_HEADER, None, 0)),
        )
    assert small.take((digest, 0, 1000, False, PACKET_CRC_HEADER, False)) is None
    assert small.take((digest, 2000, 1000, False, PACKET_CRC_HEADER, False)) is not None
