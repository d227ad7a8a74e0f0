"""A worker's checkpoints: consistent snapshots cut into chunks by content, the manifest, the
restore with its fallbacks, and the saver that sends only what changed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import Clock

from xwch.errors import ApiError, DigestMismatch
from xwch.protocol.checkpoints import (
    CheckpointPlan,
    CheckpointRecorded,
    CheckpointSaved,
    SavedCheckpoint,
)
from xwch.protocol.objects import ObjectRef
from xwch.worker.checkpoint_manifest import (
    CHUNK_SIZE,
    BadManifest,
    Chunk,
    FileEntry,
    Manifest,
    decode_manifest,
)
from xwch.worker.checkpoint_restore import restore_checkpoint
from xwch.worker.checkpoint_snapshot import (
    SnapshotTooBig,
    SnapshotUnstable,
    take_snapshot,
)
from xwch.worker.checkpointer import Checkpointer
from xwch.worker.link import UploadPlan

LIMIT = 1 << 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blocking(call: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(call, *args)


def result_of(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def ck(tmp_path: Path) -> Path:
    folder = tmp_path / "ck"
    folder.mkdir()
    return folder


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


def replace(path: Path, data: bytes) -> None:
    """What a checkpointing program does: write a new file, rename it over the old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- snapshots ------------------------------------------------------------------------------


def test_a_snapshot_lists_files_in_chunks_and_stages_their_bytes(ck: Path, staging: Path) -> None:
    big = os.urandom(2 * CHUNK_SIZE + 10)
    (ck / "state").write_bytes(b"step 3\n")
    (ck / "data").mkdir()
    (ck / "data" / "big").write_bytes(big)
    (ck / "empty").mkdir()
    snapshot = take_snapshot(ck, staging, (), {}, LIMIT)
    files = {f.path: f for f in snapshot.manifest.files}
    assert set(files) == {"state", "data/big"}
    assert [c.size for c in files["data/big"].chunks] == [CHUNK_SIZE, CHUNK_SIZE, 10]
    assert b"".join((staging / c.digest).read_bytes() for c in files["data/big"].chunks) == big
    assert files["state"].chunks == (Chunk(sha(b"step 3\n"), 7),)
    assert snapshot.manifest.dirs == ("data", "empty")
    assert snapshot.manifest.content == len(big) + 7


def test_known_chunks_and_unchanged_files_are_not_staged_again(ck: Path, staging: Path) -> None:
    """A file whose inode, size and time are those of the last snapshot is not even read."""
    (ck / "a").write_bytes(b"a" * CHUNK_SIZE + b"tail")
    (ck / "b").write_bytes(b"bee")
    first = take_snapshot(ck, staging, (), {}, LIMIT)
    for path in staging.iterdir():
        path.unlink()
    replace(ck / "b", b"bzz")
    second = take_snapshot(ck, staging, set(first.manifest.chunks()), first.identities, LIMIT)
    assert sorted(p.name for p in staging.iterdir()) == [sha(b"bzz")]
    assert second.manifest.files[0] == first.manifest.files[0]


def test_a_rewritten_file_is_cut_into_the_same_chunks_as_a_fresh_read(
    ck: Path, staging: Path
) -> None:
    """A file renamed over with a few bytes changed: its unchanged chunks, known by their
    quick hash at the same place, are the same as if every chunk were hashed anew, and only
    the changed one is staged."""
    data = bytearray(os.urandom(4 * CHUNK_SIZE + 100))
    (ck / "blob").write_bytes(data)
    first = take_snapshot(ck, staging, (), {}, LIMIT)
    data[2 * CHUNK_SIZE + 7] ^= 1
    replace(ck / "blob", bytes(data))
    known = set(first.manifest.chunks())
    (staging / "2").mkdir()
    (staging / "3").mkdir()
    again = take_snapshot(
        ck, staging / "2", known, first.identities, LIMIT, fingerprints=first.fingerprints
    )
    fresh = take_snapshot(ck, staging / "3", (), {}, LIMIT)
    assert again.manifest == fresh.manifest
    assert list(again.staged) == [sha(bytes(data[2 * CHUNK_SIZE : 3 * CHUNK_SIZE]))]


def test_a_file_renamed_over_while_the_snapshot_is_taken_makes_it_start_again(
    ck: Path, staging: Path
) -> None:
    """Never a mix of the old and the new: the second try takes the new state whole."""
    (ck / "state").write_bytes(b"step 1\n")
    (ck / "other").write_bytes(b"x" * 100)
    tries = []

    def program_moves_on() -> None:
        tries.append(1)
        if len(tries) == 1:
            replace(ck / "state", b"step 2\n")

    snapshot = take_snapshot(ck, staging, (), {}, LIMIT, between_reads=program_moves_on)
    assert len(tries) == 2
    files = {f.path: f for f in snapshot.manifest.files}
    assert files["state"].chunks == (Chunk(sha(b"step 2\n"), 7),)


def test_a_file_written_in_place_while_the_snapshot_is_taken_is_read_again(
    ck: Path, staging: Path
) -> None:
    (ck / "state").write_bytes(b"step 1\n")
    tries = []

    def program_writes() -> None:
        tries.append(1)
        if len(tries) == 1:
            with open(ck / "state", "ab") as f:
                f.write(b"half")

    snapshot = take_snapshot(ck, staging, (), {}, LIMIT, between_reads=program_writes)
    assert len(tries) == 2
    assert snapshot.manifest.files[0].chunks == (Chunk(sha(b"step 1\nhalf"), 11),)


def test_a_directory_that_never_settles_is_not_saved(ck: Path, staging: Path) -> None:
    (ck / "state").write_bytes(b"0")
    count = iter(range(100))

    def always_changing() -> None:
        replace(ck / "state", str(next(count)).encode())

    with pytest.raises(SnapshotUnstable):
        take_snapshot(ck, staging, (), {}, LIMIT, tries=3, between_reads=always_changing)


def test_a_checkpoint_over_the_limit_is_not_read(ck: Path, staging: Path) -> None:
    (ck / "big").write_bytes(b"x" * 2000)
    with pytest.raises(SnapshotTooBig) as info:
        take_snapshot(ck, staging, (), {}, 1000)
    assert (info.value.size, info.value.limit) == (2000, 1000)
    assert list(staging.iterdir()) == []


# -- manifests ------------------------------------------------------------------------------


def test_a_manifest_reads_back_as_written() -> None:
    manifest = Manifest(
        (FileEntry("s/state", 0o640, (Chunk("a" * 64, 7),)), FileEntry("e", 0o600, ())),
        ("s",),
    )
    assert decode_manifest(manifest.encode()) == manifest
    assert manifest.digest() == sha(manifest.encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"format": 2, "dirs": [], "files": []}',
        b'{"format": 1, "dirs": ["../up"], "files": []}',
        b'{"format": 1, "dirs": [], "files": [{"path": "/abs", "mode": 420, "chunks": []}]}',
        b'{"format": 1, "dirs": [], "files": [{"path": "a", "mode": 420, "chunks": [["x", 1]]}]}',
    ],
)
def test_a_manifest_that_a_worker_cannot_have_written_is_refused(raw: bytes) -> None:
    with pytest.raises(BadManifest):
        decode_manifest(raw)


# -- restoring ------------------------------------------------------------------------------


class Objects:
    """Objects a restore may fetch, by digest; some may be broken."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broken: set[str] = set()
        folder.mkdir(exist_ok=True)

    def add(self, data: bytes) -> str:
        digest = sha(data)
        (self.folder / digest).write_bytes(data)
        return digest

    def add_checkpoint(self, files: dict[str, bytes]) -> SavedCheckpoint:
        entries = tuple(
            FileEntry(path, 0o644, (Chunk(self.add(data), len(data)),) if data else ())
            for path, data in files.items()
        )
        encoded = Manifest(entries).encode()
        return SavedCheckpoint(self.add(encoded), len(encoded), 0.0)

    async def fetch(self, digest: str, size: int) -> Path:
        if digest in self.broken:
            raise DigestMismatch(f"object {digest}: the bytes received hash to something else")
        return self.folder / digest


def restore(objects: Objects, directory: Path, *saved: SavedCheckpoint) -> Any:
    plan = CheckpointPlan("ck/", 5.0, tuple(saved))
    return result_of(ensureDeferred(restore_checkpoint(plan, directory, objects.fetch, blocking)))


def test_the_newest_checkpoint_is_laid_out(tmp_path: Path) -> None:
    objects = Objects(tmp_path / "objects")
    newest = objects.add_checkpoint({"state": b"step 9\n", "sub/empty": b""})
    older = objects.add_checkpoint({"state": b"step 5\n"})
    restored = restore(objects, tmp_path / "work" / "ck", newest, older)
    assert restored.checkpoint == newest
    assert (tmp_path / "work" / "ck" / "state").read_bytes() == b"step 9\n"
    assert (tmp_path / "work" / "ck" / "sub" / "empty").read_bytes() == b""
    assert restored.notes == (f"xwch: resumed from checkpoint {newest.manifest[:12]}",)


def test_a_corrupt_checkpoint_gives_way_to_the_one_before(tmp_path: Path) -> None:
    objects = Objects(tmp_path / "objects")
    newest = objects.add_checkpoint({"state": b"step 9\n", "junk": b"junk"})
    older = objects.add_checkpoint({"state": b"step 5\n"})
    objects.broken.add(sha(b"step 9\n"))
    restored = restore(objects, tmp_path / "ck", newest, older)
    assert restored.checkpoint == older
    # Nothing of the broken one is left behind.
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["state"]
    assert (tmp_path / "ck" / "state").read_bytes() == b"step 5\n"
    assert "cannot be restored" in restored.notes[0]
    assert restored.notes[1].startswith("xwch: resumed from the checkpoint before it")


def test_without_a_readable_checkpoint_the_program_starts_from_scratch(tmp_path: Path) -> None:
    objects = Objects(tmp_path / "objects")
    only = objects.add_checkpoint({"state": b"step 9\n"})
    objects.broken.add(only.manifest)
    restored = restore(objects, tmp_path / "ck", only)
    assert restored.checkpoint is None
    assert list((tmp_path / "ck").iterdir()) == []
    assert restored.notes[-1] == "xwch: no checkpoint could be restored: starting from scratch"
    assert restore(objects, tmp_path / "fresh").notes == ()
    assert (tmp_path / "fresh").is_dir()


# -- saving ---------------------------------------------------------------------------------


class FakeCoordinator:
    """Uploads plans, stored objects (as a warehouse would keep them) and recorded saves."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.sent: list[str] = []
        self.saved: list[CheckpointSaved] = []
        self.missing_once: list[str] = []

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan:
        missing = [(r.digest, "cap") for r in refs if r.digest not in self.stored]
        return UploadPlan("http://warehouse", missing)

    async def store_object(self, url: str, digest: str, size: int, path: Path, cap: str) -> None:
        data = path.read_bytes()
        assert sha(data) == digest and len(data) == size
        self.stored[digest] = data
        self.sent.append(digest)

    async def checkpoint_saved(self, saved: CheckpointSaved) -> CheckpointRecorded:
        gone = [d for d in saved.chunks if d not in self.stored]
        if gone:
            raise ApiError(409, "missing_objects", "not stored", details={"digests": gone})
        self.saved.append(saved)
        return CheckpointRecorded(recorded=True, taken=1.0)


class Saver:
    def __init__(self, ck: Path, staging: Path, limit: int = LIMIT) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator()
        self.notes: list[str] = []
        self.checkpointer = Checkpointer(
            self.clock,
            "attempt-1",
            CheckpointPlan("ck/", 2.0),
            ck,
            staging / "attempt-1",
            limit,
            self.coordinator,
            self.coordinator.store_object,
            self.fetch,
            blocking,
            self.notes.append,
        )

    async def fetch(self, digest: str, size: int) -> Path:
        raise AssertionError("nothing to fetch")


def test_a_checkpoint_is_saved_every_period_only_when_it_changed(ck: Path, staging: Path) -> None:
    saver = Saver(ck, staging)
    (ck / "state").write_bytes(b"step 1\n")
    saver.checkpointer.start()
    assert saver.coordinator.saved == []
    saver.clock.advance(2.0)
    [first] = saver.coordinator.saved
    assert first.attempt == "attempt-1" and first.chunks == (sha(b"step 1\n"),)
    assert first.manifest in saver.coordinator.stored
    saver.clock.advance(2.0)
    assert len(saver.coordinator.saved) == 1
    replace(ck / "state", b"step 2\n")
    saver.clock.advance(2.0)
    assert len(saver.coordinator.saved) == 2
    # Staged chunks do not pile up on the volunteer's disk.
    assert list((staging / "attempt-1").iterdir()) == []


def test_an_unchanged_chunk_is_never_sent_again(ck: Path, staging: Path) -> None:
    saver = Saver(ck, staging)
    data = bytearray(os.urandom(8 * CHUNK_SIZE))
    (ck / "blob").write_bytes(data)
    result_of(saver.checkpointer.save())
    assert len(saver.coordinator.sent) == 9  # 8 chunks and the manifest
    data[3 * CHUNK_SIZE + 5] ^= 0xFF
    replace(ck / "blob", bytes(data))
    saver.coordinator.sent.clear()
    result_of(saver.checkpointer.save())
    changed = sha(bytes(data[3 * CHUNK_SIZE : 4 * CHUNK_SIZE]))
    assert saver.coordinator.sent == [changed, saver.coordinator.saved[-1].manifest]


def test_chunks_dropped_at_the_warehouse_are_sent_again(ck: Path, staging: Path) -> None:
    """A chunk believed stored but gone since (dropped with an old checkpoint) is sent anew
    when the coordinator says it is missing."""
    saver = Saver(ck, staging)
    (ck / "a").write_bytes(b"first")
    (ck / "b").write_bytes(b"second")
    result_of(saver.checkpointer.save())
    del saver.coordinator.stored[sha(b"second")]
    replace(ck / "a", b"changed")
    result_of(saver.checkpointer.save())
    assert sha(b"second") in saver.coordinator.stored
    assert len(saver.coordinator.saved) == 2


def test_a_checkpoint_over_the_limit_is_not_saved_and_the_log_says_so_once(
    ck: Path, staging: Path
) -> None:
    saver = Saver(ck, staging, limit=100)
    (ck / "big").write_bytes(b"x" * 1000)
    saver.checkpointer.start()
    saver.clock.advance(2.0)
    saver.clock.advance(2.0)
    assert saver.coordinator.saved == []
    assert len(saver.notes) == 1
    assert "not saved" in saver.notes[0] and "--max-checkpoint" in saver.notes[0]


def test_no_save_after_the_program_ended(ck: Path, staging: Path) -> None:
    saver = Saver(ck, staging)
    (ck / "state").write_bytes(b"step 1\n")
    saver.checkpointer.start()
    saver.checkpointer.stop()
    saver.clock.advance(10.0)
    result_of(saver.checkpointer.save())
    assert saver.coordinator.saved == []
