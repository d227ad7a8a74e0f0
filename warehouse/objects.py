"""The warehouse's objects on disk, named by their SHA-256.

Layout under the root: ``objects/ab/<digest>`` for stored objects (``ab`` = the digest's first
two hex digits, so no folder grows past a few thousand entries), ``incoming/<digest>.part`` for
uploads in progress. An object appears under ``objects/`` only by an atomic rename of a part
file whose hash matched, after an fsync: whatever a crash interrupts, no partial or wrong object
is ever visible, and the part file is there to resume.

Every method does blocking file I/O: the web front calls the writing ones in a thread pool. Calls
for one digest must not overlap (the web front serialises them); calls for different digests
may run in parallel threads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from xwch.errors import DigestMismatch, OffsetMismatch
from xwch.protocol.objects import require_digest
from xwch.protocol.wire import DIGEST_PATTERN
from xwch.transfer.digest import BLOCK_SIZE
from xwch.transfer.durable import fsync_directory

if TYPE_CHECKING:
    from hashlib import _Hash


class ObjectStore:
    """Content-addressed object storage in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._incoming = root / "incoming"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        # The running hash of each upload in progress, so the commit of a big object costs
        # nothing more than its last packet. Lost on a crash, rebuilt from the part file.
        self._hashers: dict[str, _Hash] = {}
        self._lock = threading.Lock()
        self._count = sum(1 for _ in self._objects.glob("??/*"))

    def _object_path(self, digest: str) -> Path:
        require_digest(digest, "digest")
        return self._objects / digest[:2] / digest

    def _part_path(self, digest: str) -> Path:
        require_digest(digest, "digest")
        return self._incoming / f"{digest}.part"

    def has(self, digest: str) -> bool:
        return self._object_path(digest).is_file()

    def size(self, digest: str) -> int:
        """The stored object's size; FileNotFoundError if it is not stored."""
        return self._object_path(digest).stat().st_size

    def open_read(self, digest: str) -> BinaryIO:
        """The stored object, open for reading; FileNotFoundError if it is not stored."""
        return self._object_path(digest).open("rb")

    def partial_size(self, digest: str) -> int:
        """How many bytes of an interrupted upload are held (0 if none)."""
        try:
            return self._part_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def write_packet(self, digest: str, offset: int, data: bytes) -> int:
        """Append a packet at ``offset`` (the bytes held, else OffsetMismatch); the new total."""
        part = self._part_path(digest)
        held = self.partial_size(digest)
        if offset != held:
            raise OffsetMismatch(expected=held, offset=offset)
        hasher = self._hasher(digest)
        with part.open("ab") as f:
            try:
                f.write(data)
                f.flush()
            except OSError:
                # Disk full, say: drop the half-written packet so file and hash still agree.
                f.truncate(held)
                raise
        hasher.update(data)
        return held + len(data)

    def store_whole(self, digest: str, data: bytes) -> int:
        """Store an object sent in one packet, in one step; its size.

        OffsetMismatch if part of it is held (the upload resumes there); DigestMismatch, with
        nothing written, if ``data`` does not hash to ``digest``.
        """
        held = self.partial_size(digest)
        if held > len(data):
            # Left by an upload that claimed another size: it cannot be a prefix of this one.
            self.discard_partial(digest)
        elif held:
            raise OffsetMismatch(expected=held, offset=0)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatch(f"the bytes received for {digest} hash to {actual}")
        part = self._part_path(digest)
        try:
            with part.open("wb") as f:
                f.write(data)
        except OSError:
            part.unlink(missing_ok=True)
            raise
        return self.adopt(part, digest)

    def commit(self, digest: str) -> int:
        """Make the upload an object if it hashes to ``digest``; its size.

        On a mismatch the part file is deleted and DigestMismatch raised: those bytes are no
        prefix of the object, resuming from them would never succeed.
        """
        part = self._part_path(digest)
        hasher = self._hasher(digest)
        with self._lock:
            self._hashers.pop(digest, None)
        if hasher.hexdigest() != digest:
            part.unlink(missing_ok=True)
            raise DigestMismatch(f"the bytes received for {digest} hash to {hasher.hexdigest()}")
        return self.adopt(part, digest)

    def fetch_path(self, digest: str) -> Path:
        """Where a copy from another warehouse is downloaded before it is adopted."""
        require_digest(digest, "digest")
        return self._incoming / f"{digest}.fetch"

    def adopt(self, path: Path, digest: str) -> int:
        """Make a file whose bytes were verified to hash to ``digest`` that object; its size."""
        target = self._object_path(digest)
        target.parent.mkdir(exist_ok=True)
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            # The bytes must be on disk before the name that promises them.
            os.fsync(f.fileno())
        existed = target.exists()
        os.replace(path, target)
        fsync_directory(target.parent)
        if not existed:
            with self._lock:
                self._count += 1
        return size

    def remove(self, digest: str) -> bool:
        """Delete a stored object (the coordinator says nobody needs it); whether it was here.
        A reader that has it open keeps reading it: the name goes, not the bytes."""
        try:
            self._object_path(digest).unlink()
        except FileNotFoundError:
            return False
        with self._lock:
            self._count -= 1
        return True

    def discard_partial(self, digest: str) -> None:
        """Forget an upload in progress."""
        with self._lock:
            self._hashers.pop(digest, None)
        self._part_path(digest).unlink(missing_ok=True)

    def _hasher(self, digest: str) -> _Hash:
        with self._lock:
            hasher = self._hashers.get(digest)
        if hasher is not None:
            return hasher
        # First packet since the upload began or since a restart: hash what is held once.
        hasher = hashlib.sha256()
        try:
            with self._part_path(digest).open("rb") as f:
                while block := f.read(BLOCK_SIZE):
                    hasher.update(block)
        except FileNotFoundError:
            pass
        with self._lock:
            self._hashers[digest] = hasher
        return hasher

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def capacity_bytes(self) -> int:
        return shutil.disk_usage(self.root).total

    def inventory(self) -> list[tuple[str, int]]:
        """Every stored object: (digest, size)."""
        found = []
        for path in self._objects.glob("??/*"):
            if DIGEST_PATTERN.match(path.name):
                found.append((path.name, path.stat().st_size))
        return found

    def count(self) -> int:
        """How many objects are stored."""
        with self._lock:
            return self._count
