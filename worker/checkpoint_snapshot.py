"""A consistent snapshot of a checkpoint directory, cut into chunks addressed by content.

Runs in a thread while the program goes on writing. A program keeps a checkpoint right by
writing a new file and renaming it over the old one; the snapshot must then hold each file as
the program left it, never a file caught half-written. So every file is read with its identity
(inode, size, modification time) taken before and after: a file replaced or changed while it
was read, or a directory whose listing changed meanwhile, makes the whole snapshot be taken
again. Renamed-in files are whole by construction, so a few tries always suffice in practice;
past ``tries`` the save is skipped and the next period tries afresh.

Unchanged files are not read again: their chunks are those of the previous snapshot with the
same identity. In a file that changed (a program rewrites its whole state through a rename, a
few percent of it new), a chunk whose XXH3-128 equals that of the chunk at the same place in the
previous snapshot is taken to be that chunk, without its SHA-256: a fifteenth of the CPU (a
chance collision of 128-bit hashes is not a concern, and a crafted one would only spoil the
task's own checkpoint). Chunks are fixed-size (:data:`CHUNK_SIZE`); each chunk not known to be
at a warehouse already is written to ``staging`` under its digest, ready to upload, at the moment
it is read (its bytes are in memory then), so nothing is read twice.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from .checkpoint_manifest import CHUNK_SIZE, Chunk, FileEntry, Manifest

# (inode, size, mtime in ns): a file that keeps these kept its bytes (a rename gives a new
# inode; a write changes the time).
Identity = tuple[int, int, int]
# Path under the checkpoint directory -> what it was.
Listing = dict[str, tuple[str, Identity, int]]
# Path -> the XXH3-128 of each of its chunks, and the chunk.
Fingerprints = dict[str, tuple[tuple[bytes, Chunk], ...]]


class SnapshotUnstable(Exception):
    """The directory kept changing while it was read."""


class SnapshotTooBig(Exception):
    """The checkpoint holds more bytes than the worker saves."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the checkpoint holds {size} bytes, more than the limit of {limit}")


@dataclass
class Snapshot:
    manifest: Manifest
    # The chunks written to the staging folder (not known at a warehouse): digest -> path.
    staged: dict[str, Path] = field(default_factory=dict)
    # What each file was, for the next snapshot to skip the unchanged ones.
    identities: dict[Identity, tuple[Chunk, ...]] = field(default_factory=dict)
    # Each file's chunks by place, for the next snapshot to know the unchanged ones quickly.
    fingerprints: Fingerprints = field(default_factory=dict)


def take_snapshot(
    directory: Path,
    staging: Path,
    known: Collection[str],
    previous: dict[Identity, tuple[Chunk, ...]],
    limit: int,
    tries: int = 5,
    between_reads: Callable[[], None] | None = None,
    fingerprints: Fingerprints | None = None,
) -> Snapshot:
    """A consistent snapshot of ``directory``; :class:`SnapshotUnstable` after ``tries``,
    :class:`SnapshotTooBig` when its files hold more than ``limit`` bytes.

    ``known``: chunks already at a warehouse (not staged again); ``previous``: the identities
    of the last snapshot's files, ``fingerprints`` their chunks by place. ``between_reads`` is called once the listing is taken and
    before the files are read (tests change the directory there).
    """
    for _ in range(tries):
        before = _listing(directory)
        size = sum(ident[1] for kind, ident, _mode in before.values() if kind == "file")
        if size > limit:
            raise SnapshotTooBig(size, limit)
        if between_reads is not None:
            between_reads()
        taken = _read_files(directory, staging, before, known, previous, fingerprints or {})
        if taken is not None and _listing(directory) == before:
            return taken
    raise SnapshotUnstable(f"{directory} kept changing over {tries} tries")


def _listing(directory: Path) -> Listing:
    """Every directory and regular file under ``directory`` (other kinds are not saved)."""
    listing: Listing = {}
    if not directory.is_dir():
        return listing
    for folder, dirs, files in os.walk(directory):
        base = Path(folder)
        for name in [*dirs, *files]:
            path = base / name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                # Renamed away while listed: the comparison with the second listing will tell.
                continue
            relative = path.relative_to(directory).as_posix()
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stat.S_ISDIR(st.st_mode):
                listing[relative] = ("dir", (0, 0, 0), 0)
            elif stat.S_ISREG(st.st_mode):
                listing[relative] = ("file", identity, stat.S_IMODE(st.st_mode) & 0o777)
    return listing


def _read_files(
    directory: Path,
    staging: Path,
    listing: Listing,
    known: Collection[str],
    previous: dict[Identity, tuple[Chunk, ...]],
    fingerprints: Fingerprints,
) -> Snapshot | None:
    """The snapshot of the files of ``listing``; None if one changed while read."""
    files = []
    identities: dict[Identity, tuple[Chunk, ...]] = {}
    prints: Fingerprints = {}
    staged: dict[str, Path] = {}
    for relative, (kind, identity, mode) in sorted(listing.items()):
        if kind != "file":
            continue
        chunks = previous.get(identity)
        if chunks is not None and relative in fingerprints:
            prints[relative] = fingerprints[relative]
        else:
            read = _read_chunks(
                directory / relative,
                identity,
                staging,
                known,
                staged,
                fingerprints.get(relative, ()),
            )
            if read is None:
                return None
            prints[relative] = read
            chunks = tuple(chunk for _quick, chunk in read)
        identities[identity] = chunks
        files.append(FileEntry(relative, mode, chunks))
    dirs = tuple(sorted(r for r, (kind, _i, _m) in listing.items() if kind == "dir"))
    return Snapshot(Manifest(tuple(files), dirs), staged, identities, prints)


def _read_chunks(
    path: Path,
    identity: Identity,
    staging: Path,
    known: Collection[str],
    staged: dict[str, Path],
    before: tuple[tuple[bytes, Chunk], ...],
) -> tuple[tuple[bytes, Chunk], ...] | None:
    """The chunks of the file at ``path`` as ``identity`` says it is, each with its XXH3-128;
    None if it is not, or changed while read. ``before``: the file's chunks by place in the
    last snapshot."""
    chunks: list[tuple[bytes, Chunk]] = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        # Renamed away since it was listed.
        return None
    with f:
        st = os.fstat(f.fileno())
        if (st.st_ino, st.st_size, st.st_mtime_ns) != identity:
            return None
        while block := f.read(CHUNK_SIZE):
            quick = xxhash.xxh3_128_digest(block)
            place = len(chunks)
            if place < len(before) and before[place][0] == quick:
                chunks.append((quick, before[place][1]))
                continue
            digest = hashlib.sha256(block).hexdigest()
            chunks.append((quick, Chunk(digest, len(block))))
            if digest not in known and digest not in staged:
                staged[digest] = _stage(staging, digest, block)
        st = os.fstat(f.fileno())
    if (st.st_ino, st.st_size, st.st_mtime_ns) != identity:
        return None
    return tuple(chunks)


def _stage(staging: Path, digest: str, block: bytes) -> Path:
    """Keep a chunk's bytes for its upload (a file: uploads read objects from files)."""
    path = staging / digest
    if not path.exists():
        part = staging / f"{digest}.part"
        part.write_bytes(block)
        os.replace(part, path)
    return path
