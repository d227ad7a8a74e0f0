"""Packet transfers: pacing, upload, download, resume, corruption, bundles."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.fakes.warehouse import InMemoryWarehouse, drive, result_of
from xwch import capability
from xwch.bundle import pack_bundle, unpack_bundle
from xwch.errors import ApiError, BundleError, DigestMismatch, Unreachable
from xwch.protocol.objects import Source
from xwch.protocol.worker import Policy
from xwch.transfer import (
    PacketPacer,
    download_object,
    sha256_file,
    upload_bytes,
    upload_file,
)
from xwch.transfer.download import Downloader
from xwch.transfer.upload import Uploader
from xwch.warehouse import routes

PACKET = 1000


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pacer(clock: Clock, packet_size: int = PACKET, sleep: float = 0.0, cap: float | None = None):
    return PacketPacer(Policy(packet_size=packet_size, packet_sleep=sleep), cap, clock)


class Recorder(Resource):
    """Passes every request to the warehouse, noting method, path, query and Range."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[str, str, str | None]] = []

    def render(self, request: Request) -> Any:
        rng = request.getHeader(b"range")
        self.seen.append(
            (request.method.decode(), request.uri.decode(), rng.decode() if rng else None)
        )
        return self.forward(request)

    def forward(self, request: Request) -> Any:
        # A leaf in front of a tree: walk the real tree from the root ourselves.
        request.prepath, request.postpath = [], request.path.split(b"/")[1:]
        resource = self.inner
        while request.postpath and not resource.isLeaf:
            name = request.postpath.pop(0)
            request.prepath.append(name)
            resource = resource.getChildWithDefault(name, request)
        return resource.render(request)


class FlakyHttp:
    """A treq-like client whose requests fail to connect while ``failures`` lasts, or always
    for URLs starting with one of ``down``."""

    def __init__(self, inner: Any, failures: int = 0, down: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.failures = failures
        self.down = down
        self.refused = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        if self.failures > 0 or url.startswith(self.down or ("\0",)):
            self.failures = max(0, self.failures - 1)
            self.refused += 1
            return fail(ConnectionRefusedError("refused"))
        return self.inner.request(method, url, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def warehouse(tmp_path: Path, clock: Clock) -> InMemoryWarehouse:
    return InMemoryWarehouse(tmp_path / "warehouse", clock)


def upload(wh: InMemoryWarehouse, clock: Clock, data: bytes, p: PacketPacer, http: Any = None):
    digest = digest_of(data)
    d = Deferred.fromCoroutine(
        upload_bytes(
            http or wh.http,
            wh.url,
            data,
            wh.capability(capability.OP_PUT, digest),
            p,
            clock,
        )
    )
    drive(clock, d)
    return d


def download(
    wh: InMemoryWarehouse,
    clock: Clock,
    digest: str,
    size: int,
    dest: Path,
    p: PacketPacer,
    http: Any = None,
    sources: list[Source] | None = None,
):
    d = Deferred.fromCoroutine(
        download_object(
            http or wh.http,
            sources if sources is not None else [wh.source(digest)],
            digest,
            size,
            dest,
            p,
            clock,
        )
    )
    drive(clock, d)
    return d


# -- pacing -------------------------------------------------------------------------------


def test_pacer_sleeps_between_packets_not_before_the_first(clock: Clock) -> None:
    """A sender waits the policy's sleep between two packets, and not before the first."""
    p = pacer(clock, sleep=0.5)
    assert p.delay_before(PACKET) == 0.0
    assert p.delay_before(PACKET) == 0.5
    assert p.delay_before(PACKET) == 0.5


def test_pacer_holds_the_rate_cap(clock: Clock) -> None:
    """N packets of S bytes under a cap of C bytes/s take N*S/C seconds, evenly spread."""
    p = pacer(clock, cap=4000.0)
    delays = []
    for _ in range(8):
        delay = p.delay_before(PACKET)
        delays.append(delay)
        clock.advance(delay)
    assert clock.seconds() == pytest.approx(8 * PACKET / 4000.0)
    assert delays == pytest.approx([0.25] * 8)


def test_pacer_cap_credits_time_on_the_wire(clock: Clock) -> None:
    """Time a packet spends being sent counts towards the cap: the rate is the cap, not less."""
    p = pacer(clock, cap=4000.0)
    clock.advance(p.delay_before(PACKET))
    clock.advance(0.1)  # the packet on the wire
    assert p.delay_before(PACKET) == pytest.approx(0.15)


def test_pacer_allows_no_burst_after_a_pause(clock: Clock) -> None:
    """After a long pause only one packet leaves at once; the next waits for the cap again."""
    p = pacer(clock, cap=4000.0)
    clock.advance(p.delay_before(PACKET))
    clock.advance(100.0)
    assert p.delay_before(PACKET) == 0.0
    assert p.delay_before(PACKET) == pytest.approx(0.25)


def test_pacer_takes_the_larger_of_sleep_and_cap(clock: Clock) -> None:
    """Sleep and cap together: each gap is the longer of the two."""
    p = pacer(clock, sleep=1.0, cap=4000.0)
    assert p.delay_before(PACKET) == pytest.approx(0.25)
    clock.advance(0.25)
    assert p.delay_before(PACKET) == pytest.approx(1.0)


def test_pacer_policy_update_applies_to_the_next_packet(clock: Clock) -> None:
    """A new policy from the coordinator changes the very next gap and the packet size."""
    p = pacer(clock, sleep=0.5)
    p.delay_before(PACKET)
    p.update(Policy(packet_size=2 * PACKET, packet_sleep=2.0))
    assert p.delay_before(PACKET) == 2.0
    assert p.policy.packet_size == 2 * PACKET


def test_upload_is_paced_on_the_clock(warehouse: InMemoryWarehouse, clock: Clock) -> None:
    """An upload of 10 packets under a cap of 4000 bytes/s takes 2.5 s of clock time."""
    data = payload(10 * PACKET)
    result_of(upload(warehouse, clock, data, pacer(clock, cap=4000.0)))
    assert clock.seconds() == pytest.approx(2.5)
    assert warehouse.store.has(digest_of(data))


# -- round trips --------------------------------------------------------------------------


def test_upload_then_download_round_trip(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A file uploaded in packets comes back byte for byte, and the coordinator was told."""
    data = payload(10 * PACKET + 123)
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    digest, size = sha256_file(source)
    assert (digest, size) == (digest_of(data), len(data))
    p = pacer(clock)
    put = Deferred.fromCoroutine(
        upload_file(
            warehouse.http,
            warehouse.url,
            digest,
            size,
            source,
            warehouse.capability(capability.OP_PUT, digest),
            p,
            clock,
        )
    )
    drive(clock, put)
    result_of(put)
    assert [r.digest for r in warehouse.catalog.reported] == [digest]

    dest = tmp_path / "out" / "copy.bin"
    result_of(download(warehouse, clock, digest, size, dest, p))
    assert dest.read_bytes() == data
    assert not dest.with_name("copy.bin.part").exists()


def test_zero_size_object_round_trip(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """An empty file uploads and downloads like any other."""
    digest = digest_of(b"")
    result_of(upload(warehouse, clock, b"", pacer(clock)))
    assert warehouse.store.size(digest) == 0
    dest = tmp_path / "empty"
    result_of(download(warehouse, clock, digest, 0, dest, pacer(clock)))
    assert dest.read_bytes() == b""


def test_uploading_a_stored_object_sends_no_packet(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """Uploading an object the warehouse already holds ends after one question."""
    data = payload(3 * PACKET)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    assert [m for m, _, _ in recorder.seen] == ["GET"]


def test_an_object_of_one_packet_is_sent_without_asking_first(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """A small object is one PUT: no question about what is held, new or already stored."""
    data = payload(PACKET // 2)
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    assert warehouse.store.has(digest_of(data))
    result_of(upload(warehouse, clock, data, pacer(clock)))
    assert [m for m, _, _ in recorder.seen] == ["PUT", "PUT"]


def test_a_one_packet_object_partly_held_resumes_where_the_warehouse_says(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """Sent blind, a packet at the wrong offset gets 409: the upload follows the warehouse."""
    data = payload(PACKET // 2)
    digest = digest_of(data)
    warehouse.store.write_packet(digest, 0, data[:100])
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    offsets = [uri.split("offset=")[1].split("&")[0] for m, uri, _ in recorder.seen]
    assert offsets == ["0", "100"]
    assert warehouse.store.has(digest)


# -- resume -------------------------------------------------------------------------------


def test_download_resumes_from_the_part_file(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A download broken half way continues from the bytes already on disk."""
    data = payload(10 * PACKET)
    digest = digest_of(data)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    dest = tmp_path / "copy.bin"
    dest.with_name("copy.bin.part").write_bytes(data[: 5 * PACKET])
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    result_of(download(warehouse, clock, digest, len(data), dest, pacer(clock)))
    assert dest.read_bytes() == data
    ranges = [r for _, _, r in recorder.seen]
    assert ranges[0] == f"bytes={5 * PACKET}-{6 * PACKET - 1}"
    assert len(ranges) == 5


def test_upload_resumes_at_the_warehouse_offset(warehouse: InMemoryWarehouse, clock: Clock) -> None:
    """An upload the warehouse already holds half of sends only the other half."""
    data = payload(10 * PACKET)
    digest = digest_of(data)
    warehouse.store.write_packet(digest, 0, data[: 4 * PACKET])
    recorder = Recorder(warehouse.resource)
    warehouse.serve(recorder)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    puts = [uri for m, uri, _ in recorder.seen if m == "PUT"]
    assert puts[0].endswith(f"?offset={4 * PACKET}&size={len(data)}")
    assert len(puts) == 6
    assert warehouse.store.has(digest)


def test_upload_follows_the_offset_the_warehouse_expects(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """When the warehouse answers 409 offset, the upload continues from the expected byte."""
    data = payload(6 * PACKET)
    digest = digest_of(data)
    warehouse.store.write_packet(digest, 0, data[: 2 * PACKET])

    class ForgetfulStart(Recorder):
        """Claims to hold nothing, as a warehouse answering from a stale view would."""

        def render(self, request: Request) -> Any:
            if request.path.endswith(b"/upload"):
                request.setHeader(b"content-type", b"application/json")
                return b'{"offset": 0}'
            return super().render(request)

    recorder = ForgetfulStart(warehouse.resource)
    warehouse.serve(recorder)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    offsets = [uri.split("offset=")[1].split("&")[0] for m, uri, _ in recorder.seen]
    assert offsets[:2] == ["0", str(2 * PACKET)]
    assert warehouse.store.has(digest)


def test_upload_retries_after_connection_failures(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """A warehouse unreachable for a moment only delays the upload (backoff on the clock)."""
    data = payload(3 * PACKET)
    flaky = FlakyHttp(warehouse.http, failures=3)
    result_of(upload(warehouse, clock, data, pacer(clock), http=flaky))
    assert flaky.refused == 3
    assert clock.seconds() > 0
    assert warehouse.store.has(digest_of(data))


def test_upload_waits_out_a_busy_warehouse(warehouse: InMemoryWarehouse, clock: Clock) -> None:
    """An upload to a warehouse that cannot reach its coordinator waits, then ends stored."""
    data = payload(2 * PACKET)
    warehouse.catalog.error = Unreachable("coordinator down")
    result_of(upload(warehouse, clock, data, pacer(clock)))
    assert clock.seconds() >= routes.REPORT_RETRY_AFTER
    assert [r.digest for r in warehouse.catalog.reported] == [digest_of(data)]


def test_upload_gives_up_when_the_warehouse_stays_unreachable(
    warehouse: InMemoryWarehouse, clock: Clock
) -> None:
    """A warehouse that never answers fails the upload with Unreachable after a few tries."""
    flaky = FlakyHttp(warehouse.http, failures=1000)
    d = upload(warehouse, clock, payload(PACKET), pacer(clock), http=flaky)
    with pytest.raises(Unreachable):
        result_of(d)
    assert flaky.refused == Uploader.MAX_ATTEMPTS


def test_download_falls_back_to_the_next_source(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A download whose first warehouse is down gets the object from the next one."""
    data = payload(4 * PACKET)
    digest = digest_of(data)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    flaky = FlakyHttp(warehouse.http, down=("http://down.test",))
    sources = [Source("http://down.test", "x"), warehouse.source(digest)]
    dest = tmp_path / "copy.bin"
    result_of(download(warehouse, clock, digest, len(data), dest, pacer(clock), flaky, sources))
    assert dest.read_bytes() == data
    assert flaky.refused == 1


def test_download_gives_up_when_no_source_answers(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """With every warehouse down, the download fails with Unreachable and leaves no file."""
    flaky = FlakyHttp(warehouse.http, failures=1000)
    dest = tmp_path / "copy.bin"
    digest = digest_of(b"x" * 10)
    d = download(warehouse, clock, digest, 10, dest, pacer(clock), flaky)
    with pytest.raises(Unreachable):
        result_of(d)
    assert flaky.refused == Downloader.MAX_ROUNDS
    assert not dest.exists()


def test_download_refused_without_a_valid_capability(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A download with a forged capability fails with the warehouse's 403 forbidden."""
    data = payload(PACKET)
    digest = digest_of(data)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    d = download(
        warehouse,
        clock,
        digest,
        len(data),
        tmp_path / "x",
        pacer(clock),
        sources=[Source(warehouse.url, "forged.capability")],
    )
    with pytest.raises(ApiError) as caught:
        result_of(d)
    assert (caught.value.status, caught.value.code) == (403, "forbidden")


# -- corruption ---------------------------------------------------------------------------


class CorruptOnce(Recorder):
    """Flips one byte of the first PUT packet it sees, as a bad link would."""

    def __init__(self, inner: Resource) -> None:
        super().__init__(inner)
        self.flipped = False

    def render(self, request: Request) -> Any:
        if request.method == b"PUT" and not self.flipped:
            self.flipped = True
            body = bytearray(request.content.read())
            body[0] ^= 0xFF
            request.content = io.BytesIO(bytes(body))
        return super().render(request)


def test_corrupt_packet_is_sent_again(warehouse: InMemoryWarehouse, clock: Clock) -> None:
    """A packet damaged on the way is refused (422) and sent again; the upload succeeds."""
    data = payload(3 * PACKET)
    corrupter = CorruptOnce(warehouse.resource)
    warehouse.serve(corrupter)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    puts = [uri for m, uri, _ in corrupter.seen if m == "PUT"]
    assert puts[0] == puts[1]
    assert len(puts) == 4
    with warehouse.store.open_read(digest_of(data)) as f:
        assert f.read() == data


def test_upload_of_wrong_bytes_raises_digest_mismatch(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """Bytes that do not hash to the announced digest are discarded: no object appears."""
    data = payload(3 * PACKET)
    claimed = digest_of(b"something else entirely")
    path = tmp_path / "lies.bin"
    path.write_bytes(data)
    d = Deferred.fromCoroutine(
        upload_file(
            warehouse.http,
            warehouse.url,
            claimed,
            len(data),
            path,
            warehouse.capability(capability.OP_PUT, claimed),
            pacer(clock),
            clock,
        )
    )
    drive(clock, d)
    with pytest.raises(DigestMismatch):
        result_of(d)
    assert not warehouse.store.has(claimed)
    assert warehouse.store.partial_size(claimed) == 0
    assert warehouse.catalog.reported == []


def test_download_of_wrong_bytes_raises_digest_mismatch(
    warehouse: InMemoryWarehouse, clock: Clock, tmp_path: Path
) -> None:
    """A warehouse serving other bytes than the digest's fails the download; nothing is left."""
    data = payload(3 * PACKET)
    digest = digest_of(data)
    result_of(upload(warehouse, clock, data, pacer(clock)))
    # Rot on the warehouse's disk.
    stored = warehouse.store.root / "objects" / digest[:2] / digest
    rotten = bytearray(stored.read_bytes())
    rotten[-1] ^= 1
    stored.write_bytes(bytes(rotten))
    dest = tmp_path / "copy.bin"
    with pytest.raises(DigestMismatch):
        result_of(download(warehouse, clock, digest, len(data), dest, pacer(clock)))
    assert not dest.exists()
    assert not dest.with_name("copy.bin.part").exists()


# -- bundles ------------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "run").chmod(0o755)
    (root / "data.txt").write_text("data\n")
    (root / "empty").mkdir()
    return root


def test_bundle_packing_is_deterministic(tmp_path: Path) -> None:
    """The same folder always packs to the same bytes, whatever its times and permissions."""
    tree = make_tree(tmp_path / "tree")
    first = tmp_path / "a.tar"
    pack_bundle(tree, first)
    os.utime(tree / "data.txt", (1_000_000, 1_000_000))
    (tree / "data.txt").chmod(0o600)
    second = tmp_path / "b.tar"
    pack_bundle(tree, second)
    assert sha256_file(first) == sha256_file(second)
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())


def test_bundle_unpacks_with_executables_kept(tmp_path: Path) -> None:
    """An unpacked bundle has the same files, and its programs are still executable."""
    tree = make_tree(tmp_path / "tree")
    archive = tmp_path / "b.tar"
    pack_bundle(tree, archive)
    dest = tmp_path / "out"
    unpack_bundle(archive, dest)
    assert (dest / "bin" / "run").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.access(dest / "bin" / "run", os.X_OK)
    assert not os.access(dest / "data.txt", os.X_OK)
    assert (dest / "empty").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.")] == []


def test_bundle_refuses_a_link_leaving_the_folder(tmp_path: Path) -> None:
    """Packing a folder with a symbolic link to outside it fails with a BundleError."""
    tree = make_tree(tmp_path / "tree")
    (tmp_path / "secret").write_text("secret")
    (tree / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(BundleError, match="outside"):
        pack_bundle(tree, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def evil_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("fine.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def _sym(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hard(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _dev(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (tarfile.TarInfo("../escape.txt"), "leaves"),
        (tarfile.TarInfo("sub/../../escape.txt"), "leaves"),
        (tarfile.TarInfo("/etc/escape.txt"), "absolute"),
        (_sym("link", "/etc/passwd"), "links"),
        (_sym("link", "fine.txt"), "links"),
        (_hard("hard", "fine.txt"), "links"),
        (_dev("dev"), "only files"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-in", "hardlink", "device"],
)
def test_unpack_refuses_dangerous_members(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    """A bundle with a member that could escape or is not a plain file is refused whole."""
    archive = evil_archive(tmp_path / "evil.tar", member, b"pwned")
    dest = tmp_path / "deep" / "out"
    with pytest.raises(BundleError, match=why):
        unpack_bundle(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert list((tmp_path / "deep").iterdir()) == []
