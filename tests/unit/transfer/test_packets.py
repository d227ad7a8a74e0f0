"""Whole transfers against the real warehouse routes in memory: corruption both ways, resume
after a cut, compression both ways, busy warehouses, the meter, copies between warehouses."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.server import Request

from tests.fakes.warehouse import InMemoryWarehouse, drive, result_of
from tests.unit.test_transfer import Recorder
from xwch import capability
from xwch.errors import ApiError
from xwch.protocol.objects import Source
from xwch.protocol.wire import (
    ACCEPT_PACKET_CHECK_HEADER,
    PACKET_CRC_HEADER,
    PACKET_ENCODING_HEADER,
    PACKET_XXH3_HEADER,
)
from xwch.protocol.worker import Policy
from xwch.transfer import PacketPacer, copy_object, download_object, upload_bytes
from xwch.transfer.download import Downloader

PACKET = 1000
TEXT = b"".join(b"%06d a line that compresses\n" % i for i in range(400))
NOISE = random.Random(11).randbytes(10 * PACKET)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def warehouse(tmp_path: Path, clock: Clock) -> InMemoryWarehouse:
    return InMemoryWarehouse(tmp_path / "warehouse", clock)


def pacer(clock: Clock) -> PacketPacer:
    return PacketPacer(Policy(packet_size=PACKET), None, clock, interface=None)


def upload(wh: InMemoryWarehouse, clock: Clock, data: bytes, http: Any = None) -> None:
    d = Deferred.fromCoroutine(
        upload_bytes(
            http or wh.http,
            wh.url,
            data,
            wh.capability(capability.OP_PUT, digest_of(data)),
            pacer(clock),
            clock,
        )
    )
    drive(clock, d)
    result_of(d)


def download(
    wh: InMemoryWarehouse,
    clock: Clock,
    data: bytes,
    dest: Path,
    http: Any = None,
    p: PacketPacer | None = None,
) -> Deferred[None]:
    digest = digest_of(data)
    d = Deferred.fromCoroutine(
        download_object(
            http or wh.http,
            [wh.source(digest)],
            digest,
            len(data),
            dest,
            p or pacer(clock),
            clock,
        )
    )
    drive(clock, d)
    return d


class AnswerSpy(Recorder):
    """Notes every answer's packet encoding and checksum header; can damage the first answer
    body; ``old``: the warehouse ignores an offer of XXH3, as one from before it did."""

    def __init__(self, inner: Any, damage: int = 0, old: bool = False) -> None:
        super().__init__(inner)
        self.encodings: list[str | None] = []
        self.checks: list[str | None] = []
        self.damage = damage
        self.old = old

    def render(self, request: Request) -> Any:
        write = request.write

        def spying_write(data: bytes) -> None:
            if self.damage and data:
                self.damage -= 1
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            write(data)

        request.write = spying_write  # type: ignore[method-assign]
        if self.old:
            request.requestHeaders.removeHeader(ACCEPT_PACKET_CHECK_HEADER.encode())
        result = super().render(request)
        value = request.responseHeaders.getRawHeaders(PACKET_ENCODING_HEADER.encode())
        self.encodings.append(value[0].decode() if value else None)
        sent = [
            h
            for h in (PACKET_XXH3_HEADER, PACKET_CRC_HEADER)
            if request.responseHeaders.hasHeader(h)
        ]
        self.checks.append(sent[0] if sent else None)
        return result


class CutAfter:
    """A treq-like client whose ``nth`` request reaches the warehouse but whose answer is lost
    on the way back, as when a connection is cut in the middle of the answer's body."""

    def __init__(self, inner: Any, nth: int) -> None:
        self.inner = inner
        self.nth = nth
        self.seen = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.seen += 1
        d = self.inner.request(method, url, **kwargs)
        if self.seen != self.nth:
            return d

        def cut(response: Any) -> Deferred[Any]:
            return fail(ResponseFailed([Failure(ConnectionError("connection cut"))]))

        return d.addCallback(cut)


# -- corruption ---------------------------------------------------------------------------


def test_a_download_packet_corrupted_on_the_way_is_asked_for_again(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A packet whose bytes do not match the CRC the warehouse sent is asked for again; the
    download succeeds without starting over."""
    upload(warehouse, clock, NOISE)
    spy = AnswerSpy(warehouse.resource, damage=1)
    warehouse.serve(spy)
    dest = tmp_path / "copy.bin"
    result_of(download(warehouse, clock, NOISE, dest))
    assert dest.read_bytes() == NOISE
    ranges = [r for m, _, r in spy.seen if m == "GET"]
    assert ranges[0] == ranges[1] == f"bytes=0-{PACKET - 1}"
    assert len(ranges) == 11
    assert set(spy.checks) == {PACKET_XXH3_HEADER}


def test_a_corrupted_packet_from_a_warehouse_without_xxh3_is_caught_by_its_crc(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A warehouse from before the XXH3 check answers with the CRC-32 only: the downloader
    checks that, and a damaged packet is still asked for again."""
    upload(warehouse, clock, NOISE)
    spy = AnswerSpy(warehouse.resource, damage=1, old=True)
    warehouse.serve(spy)
    dest = tmp_path / "copy.bin"
    result_of(download(warehouse, clock, NOISE, dest))
    assert dest.read_bytes() == NOISE
    ranges = [r for m, _, r in spy.seen if m == "GET"]
    assert ranges[0] == ranges[1] == f"bytes=0-{PACKET - 1}"
    assert set(spy.checks) == {PACKET_CRC_HEADER}


def test_a_compressed_upload_packet_corrupted_on_the_way_is_sent_again(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """A zstd packet damaged on the way is refused (422) and sent again; the object is right."""

    class CorruptFirstPut(Recorder):
        flipped = False

        def render(self, request: Request) -> Any:
            if request.method == b"PUT" and not self.flipped:
                self.flipped = True
                body = bytearray(request.content.read())
                body[len(body) // 2] ^= 0xFF
                request.content = io.BytesIO(bytes(body))
            return super().render(request)

    spy = CorruptFirstPut(warehouse.resource)
    warehouse.serve(spy)
    upload(warehouse, clock, TEXT)
    puts = [uri for m, uri, _ in spy.seen if m == "PUT"]
    assert puts[0] == puts[1]
    with warehouse.store.open_read(digest_of(TEXT)) as f:
        assert f.read() == TEXT


# -- resume after a cut -------------------------------------------------------------------


def test_a_download_cut_mid_transfer_resumes_at_the_first_missing_packet(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A connection cut in the middle of the fifth packet's answer: the download asks for that
    packet again and goes on; nothing is fetched twice but it."""
    upload(warehouse, clock, NOISE)
    spy = AnswerSpy(warehouse.resource)
    warehouse.serve(spy)
    cut = CutAfter(warehouse.http, nth=5)
    dest = tmp_path / "copy.bin"
    result_of(download(warehouse, clock, NOISE, dest, http=cut))
    assert dest.read_bytes() == NOISE
    ranges = [r for _, _, r in spy.seen]
    assert ranges[4] == ranges[5] == f"bytes={4 * PACKET}-{5 * PACKET - 1}"
    assert len(ranges) == 11


def test_an_upload_cut_mid_transfer_resumes_where_the_warehouse_stopped(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """A connection cut after the warehouse took a packet but before its answer came back: the
    upload asks the warehouse what it holds and goes on from there, sending no packet twice."""
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    cut = CutAfter(warehouse.http, nth=4)  # GET /upload, then PUTs: the third PUT's answer
    upload(warehouse, clock, NOISE, http=cut)
    assert warehouse.store.has(digest_of(NOISE))
    calls = [(m, uri.split("?")[-1]) for m, uri, _ in recorder.seen]
    assert calls[4][0] == "GET" and calls[4][1].endswith("/upload")
    puts = [q for m, q in calls if m == "PUT"]
    assert len(puts) == len(set(puts)) == 10


# -- compression ----------------------------------------------------------------------------


def test_text_travels_compressed_both_ways(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """An upload of text sends zstd packets; its download gets zstd packets back; the bytes
    are the same at both ends."""

    class PutSpy(Recorder):
        encodings: list[str | None]

        def render(self, request: Request) -> Any:
            if request.method == b"PUT":
                value = request.getHeader(PACKET_ENCODING_HEADER.encode())
                self.encodings.append(value.decode() if value else None)
            return super().render(request)

    puts = PutSpy(warehouse.resource)
    puts.encodings = []
    warehouse.serve(puts)
    upload(warehouse, clock, TEXT)
    assert puts.encodings and set(puts.encodings) == {"zstd"}
    spy = AnswerSpy(warehouse.resource)
    warehouse.serve(spy)
    dest = tmp_path / "text.txt"
    result_of(download(warehouse, clock, TEXT, dest))
    assert dest.read_bytes() == TEXT
    assert set(spy.encodings) == {"zstd"}


def test_noise_travels_raw(warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path) -> None:
    """Data that does not compress goes raw: the warehouse stops trying after two packets."""
    upload(warehouse, clock, NOISE)
    spy = AnswerSpy(warehouse.resource)
    warehouse.serve(spy)
    result_of(download(warehouse, clock, NOISE, tmp_path / "noise"))
    assert set(spy.encodings) == {None}
    verdict = warehouse.resource.network.compression.for_object(digest_of(NOISE))
    assert verdict.compressed_packets == 0 and verdict.raw_packets == 10


# -- busy warehouses, sessions, meter ------------------------------------------------------


def test_a_busy_warehouse_makes_a_download_wait_not_fail(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A warehouse serving all the sessions it may answers 503 with Retry-After; the download
    waits (on the clock), then completes once a session has ended."""
    upload(warehouse, clock, NOISE)
    sessions = warehouse.resource.network.sessions
    sessions.set_limit(1)
    sessions.admit("someone else")
    clock.callLater(7.0, sessions.finish, "someone else")
    dest = tmp_path / "copy.bin"
    result_of(download(warehouse, clock, NOISE, dest))
    assert dest.read_bytes() == NOISE
    assert clock.seconds() >= 7.0
    assert sessions.refused >= 1
    assert sessions.active() == 0  # the last packet ended the session


def test_a_warehouse_busy_beyond_patience_fails_the_download(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A warehouse that stays busy fails the download with its 503 after BUSY_PATIENCE."""
    upload(warehouse, clock, NOISE)
    sessions = warehouse.resource.network.sessions
    sessions.set_limit(1)
    # A session that never ends: its packets keep coming.
    hog = LoopingCall(sessions.admit, "hog")
    hog.clock = clock
    hog.start(1.0)
    d = Deferred.fromCoroutine(
        download_object(
            warehouse.http,
            [warehouse.source(digest_of(NOISE))],
            digest_of(NOISE),
            len(NOISE),
            tmp_path / "x",
            pacer(clock),
            clock,
        )
    )
    drive(clock, d)
    hog.stop()
    with pytest.raises(ApiError) as caught:
        result_of(d)
    assert caught.value.status == 503
    # It gives up rather than start a wait that would take it past its patience.
    assert clock.seconds() > Downloader.BUSY_PATIENCE - Downloader.BACKOFF_CAP


def test_transfers_are_metered_per_peer(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """What a worker downloaded is in its next transfers report, under the warehouse's URL."""
    upload(warehouse, clock, NOISE)
    p = pacer(clock)
    result_of(download(warehouse, clock, NOISE, tmp_path / "x", p=p))
    [(url, peer)] = p.transfer_report().peers.items()
    assert (url, peer.received, peer.packets) == (warehouse.url, len(NOISE), 10)
    network = warehouse.resource.network
    assert network.sessions.status()["active"] == 0
    served = network.meter.take_report().peers["clients"]
    assert served.sent == len(NOISE) and served.received == len(NOISE)


# -- copies between warehouses -------------------------------------------------------------


def test_copy_object_pulls_from_another_warehouse_and_skips_itself(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A warehouse copying an object pulls it, verified, from the others, never from itself."""
    upload(warehouse, clock, NOISE)
    digest = digest_of(NOISE)
    dest = tmp_path / "incoming" / f"{digest}.fetch"
    own = Source("http://me.test:1", "x")
    d = Deferred.fromCoroutine(
        copy_object(
            warehouse.http,
            [own, warehouse.source(digest)],
            digest,
            len(NOISE),
            dest,
            pacer(clock),
            clock,
            own_url="http://me.test:1/",
        )
    )
    drive(clock, d)
    result_of(d)
    assert dest.read_bytes() == NOISE


# -- the next packet asked for while this one is written ------------------------------------


class PartSizeSpy:
    """A treq-like client noting how many bytes the part file held at each request."""

    def __init__(self, inner: Any, part: Path) -> None:
        self.inner = inner
        self.part = part
        self.held: list[int] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.held.append(self.part.stat().st_size if self.part.exists() else 0)
        return self.inner.request(method, url, **kwargs)


class SilentAfter:
    """A treq-like client whose requests after the ``nth`` are never answered; it notes which
    of those were cancelled."""

    def __init__(self, inner: Any, nth: int) -> None:
        self.inner = inner
        self.nth = nth
        self.seen = 0
        self.cancelled = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.seen += 1
        if self.seen <= self.nth:
            return self.inner.request(method, url, **kwargs)

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        return Deferred(cancel)


def test_the_next_packet_is_asked_for_before_this_one_is_written(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """Packet k+1's request goes out as soon as packet k is checked, before k is written: the
    link does not idle while the worker writes and hashes."""
    upload(warehouse, clock, NOISE)
    dest = tmp_path / "copy.bin"
    spy = PartSizeSpy(warehouse.http, dest.with_name(dest.name + ".part"))
    result_of(download(warehouse, clock, NOISE, dest, http=spy))
    assert dest.read_bytes() == NOISE
    assert spy.held == [0] + [k * PACKET for k in range(9)]


def test_a_download_whose_write_fails_cancels_the_packet_asked_for(
    warehouse: InMemoryWarehouse,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that fails (a full disk) fails the download at once, and the next packet's
    request, already on its way, is cancelled rather than left behind."""
    from xwch.transfer import sink

    upload(warehouse, clock, NOISE)
    writes = 0
    real_write_all = sink.write_all

    def failing_write_all(fd: int, chunks: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise OSError(28, "No space left on device")
        real_write_all(fd, chunks)

    monkeypatch.setattr(sink, "write_all", failing_write_all)
    silent = SilentAfter(warehouse.http, nth=3)
    d = download(warehouse, clock, NOISE, tmp_path / "copy.bin", http=silent)
    with pytest.raises(OSError, match="No space left"):
        result_of(d)
    # The second packet's failed write is known when the third is handed over, the fourth
    # being asked for: it is cancelled then, not left to time out.
    assert silent.seen == 4
    assert silent.cancelled == 1
    assert clock.seconds() == 0
