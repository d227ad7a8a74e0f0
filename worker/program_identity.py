"""Programs this worker has hashed itself, known afterwards by their file's identity.

The launcher checks a program's bytes against their digest right before each run. For a big
program that is the dearest step of every attempt (a 100 MB program, some 70 ms of CPU each time,
with the CPU's SHA instructions). Once this worker has hashed a program file itself and seen it
unchanged throughout, its attempts hand the launcher that file's identity (device, inode, ctime,
size) with ``--known-identity``; the launcher then skips the hash if the file still has exactly
that identity, is a regular file of the launcher's own user and nobody may write it, and hashes
as before otherwise.

Why a file with the same identity has the same bytes (docs/architecture.md, *Trusting a
verified program*, says it at length):

- every change through the file system changes the identity: a write or a truncation sets the
  ctime to the current time, so does a ``chmod``, ``chown``, link or ``utime``; a file put in
  its place is another inode (or, for the same inode number reused, another ctime); ctime cannot
  be set back by any call short of changing the system's clock;
- a ctime recorded is at least :attr:`VerifiedPrograms.SETTLED` old, so that a change made in
  the same tick of the file system's clock as the last one cannot leave it unchanged (coarse
  timestamps: a jiffy on Linux, a second or two on some file systems);
- the file is sealed (the worker's, no write bit) when hashed and when trusted, so only its owner
  or root could open it for writing, and doing so needs a ``chmod`` first, itself a change;
- trust is given only where tasks cannot write to the cache at all (:meth:`Sandbox.seals_cache`:
  Landlock confines their writes, or they run as another user). Elsewhere a task runs as the
  owner of the cache, and the launcher hashes the program before every attempt, as always.

What it does not cover: the worker's own user and root, who can change the worker itself, and
writes below the file system (to the disk device, or the disk's own errors), which the hash on
the first use after each start of the worker still catches.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

_BLOCK = 1 << 20
# Writable by its owner, its group or others.
_WRITE_BITS = 0o222


@dataclass(frozen=True)
class FileIdentity:
    """What a file is to the kernel, and changes with any change made to it."""

    device: int
    inode: int
    ctime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)

    def option(self) -> str:
        """The value of the launcher's ``--known-identity``."""
        return f"{self.device}:{self.inode}:{self.ctime_ns}:{self.size}"


def parse_identity(value: str) -> FileIdentity:
    """The identity of a ``--known-identity`` value; ValueError if it is not four numbers."""
    parts = value.split(":")
    # ASCII digits only, each below 2**64: what the C launcher's strtoull takes.
    if len(parts) != 4 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(value)
    device, inode, ctime_ns, size = (int(part) for part in parts)
    if max(device, inode, ctime_ns, size) >= 1 << 64:
        raise ValueError(value)
    return FileIdentity(device, inode, ctime_ns, size)


def is_sealed(st: os.stat_result, euid: int) -> bool:
    """A regular file of ``euid`` that nobody may write (as the cache keeps its programs)."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == euid and not st.st_mode & _WRITE_BITS


def holds(path: str, trusted: FileIdentity, euid: int) -> bool:
    """Whether ``path`` is still the sealed file of identity ``trusted`` (the launcher's check)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return is_sealed(st, euid) and FileIdentity.of(st) == trusted


class VerifiedPrograms:
    """The program files this worker hashed, by path: the digest and identity they had then.

    Kept in memory only: after a restart each program is hashed once more before it is trusted.
    :meth:`hash_if_unchanged` blocks (it reads the whole file): callers run it in a thread. The
    others are cheap (one ``stat``) and run on the reactor.
    """

    # Seconds a file's ctime must be in the past before the identity is recorded (see above).
    SETTLED = 2.0

    def __init__(self, now: Callable[[], float] = time.time, euid: int | None = None) -> None:
        self._now = now
        self._euid = os.geteuid() if euid is None else euid
        self._known: dict[Path, tuple[str, FileIdentity]] = {}

    def trusted(self, path: Path, digest: str) -> FileIdentity | None:
        """The identity to hand the launcher for ``path``, whose bytes must hash to
        ``digest``: the one recorded when this worker hashed it, while the file still has it."""
        known = self._known.get(path)
        if known is None or known[0] != digest:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if is_sealed(st, self._euid) and FileIdentity.of(st) == known[1]:
            return known[1]
        # Changed since (or gone): hashed again before it is trusted again.
        del self._known[path]
        return None

    def worth_hashing(self, path: Path) -> bool:
        """Whether hashing ``path`` now could earn it trust: sealed, its ctime settled."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        return is_sealed(st, self._euid) and self._settled(st)

    def hash_if_unchanged(self, path: Path, digest: str) -> FileIdentity | None:
        """Hash ``path``; its identity if its bytes hash to ``digest`` and it stayed sealed,
        settled and the same file all along, else None. Blocking; records nothing."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            before = os.fstat(fd)
            if not is_sealed(before, self._euid) or not self._settled(before):
                return None
            sha = hashlib.sha256()
            while block := os.read(fd, _BLOCK):
                sha.update(block)
            after = os.fstat(fd)
            named = os.stat(path)
        except OSError:
            return None
        finally:
            os.close(fd)
        identity = FileIdentity.of(before)
        if sha.hexdigest() != digest or FileIdentity.of(after) != identity:
            return None
        # The path still names the file hashed: nothing was put in its place meanwhile.
        return identity if FileIdentity.of(named) == identity else None

    async def identity_for(
        self,
        path: Path,
        digest: str,
        run_blocking: Callable[
            [Callable[[Path, str], FileIdentity | None], Path, str], Awaitable[FileIdentity | None]
        ],
    ) -> FileIdentity | None:
        """The identity to trust for ``path`` (see :meth:`trusted`), hashing it first through
        ``run_blocking`` (a thread) when that could earn it trust; None: the launcher hashes."""
        identity = self.trusted(path, digest)
        if identity is None and self.worth_hashing(path):
            identity = await run_blocking(self.hash_if_unchanged, path, digest)
            if identity is not None:
                self.record(path, digest, identity)
        return identity

    def record(self, path: Path, digest: str, identity: FileIdentity) -> None:
        """``path`` was hashed (:meth:`hash_if_unchanged`) and found to be ``digest``."""
        self._known[path] = (digest, identity)

    def _settled(self, st: os.stat_result) -> bool:
        return self._now() - st.st_ctime_ns / 1e9 >= self.SETTLED
