"""The worker's object cache: binaries, inputs and outputs by digest, bundles unpacked once.

Layout under the cache root (``<data>/cache``):

    objects/ab/<digest>       every object, read-only, named by its SHA-256
    objects/ab/<digest>.part  a download in progress (resumed after a restart)
    programs/<digest>         an executable copy of a single-file binary
    bundles/<digest>/         a bundle archive unpacked
    staging/                  an attempt's outputs on their way in, before they are hashed

Files only ever appear under their final names by an atomic rename, so whatever is found there
is complete and, for downloads, verified against its digest. Objects are read-only because attempts get hard links to them: a task must not be
able to change, through its input, what the next task reads. The cache never grows smaller (no
eviction yet).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.bundle import unpack_bundle
from xwch.protocol import DIGEST_PATTERN, Source

# Downloads one object into a file: (sources, digest, size, destination). The destination must
# appear only complete and verified against the digest (``xwch.transfer.download_object`` does).
Fetch = Callable[[Sequence[Source], str, int, Path], Awaitable[None]]

OBJECT_MODE = 0o444
PROGRAM_MODE = 0o555


class CacheError(Exception):
    """An object cannot be made available (no source, bad bundle entry...)."""


@dataclass
class _Download:
    """One download in flight and the callers waiting for it."""

    deferred: Deferred[None] | None = None
    waiters: list[Deferred[Path]] = field(default_factory=list)


class ObjectCache:
    """Objects by digest on local disk, each downloaded once however many attempts want it."""

    log = Logger()

    def __init__(self, root: Path, fetch: Fetch) -> None:
        self.root = root
        self._fetch = fetch
        self._downloads: dict[str, _Download] = {}
        for sub in ("objects", "programs", "bundles", "staging"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Outputs a previous run was taking in when it died belong to attempts long given up.
        for leftover in (root / "staging").iterdir():
            leftover.unlink()

    def path_for(self, digest: str) -> Path:
        """Where the object ``digest`` is (or will be) kept."""
        _check_digest(digest)
        return self.root / "objects" / digest[:2] / digest

    def has(self, digest: str, size: int | None = None) -> bool:
        path = self.path_for(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    async def ensure(self, digest: str, size: int, sources: Sequence[Source]) -> Path:
        """The local path of object ``digest``, downloading it first if need be.

        Concurrent calls for one digest share one download. Cancelling a call withdraws only
        that caller; the download stops when nobody waits for it any more.
        """
        path = self.path_for(digest)
        if self.has(digest, size):
            return path
        waiter: Deferred[Path] = Deferred(lambda d: self._withdraw(digest, d))
        download = self._downloads.get(digest)
        if download is not None:
            download.waiters.append(waiter)
        else:
            if not sources:
                raise CacheError(f"object {digest} is not cached and has no source")
            # The waiter is in before the download starts: a fetch that completes at once
            # must find it.
            download = self._downloads[digest] = _Download(waiters=[waiter])
            download.deferred = Deferred.fromCoroutine(
                self._download(download, digest, size, sources, path)
            )
        return await waiter

    def _withdraw(self, digest: str, waiter: Deferred[Path]) -> None:
        download = self._downloads.get(digest)
        if download is None or waiter not in download.waiters:
            return
        download.waiters.remove(waiter)
        if not download.waiters and download.deferred is not None:
            # Nobody wants it any more (every attempt that needed it was killed): stop spending
            # the volunteer's bandwidth on it.
            download.deferred.cancel()

    async def _download(
        self,
        download: _Download,
        digest: str,
        size: int,
        sources: Sequence[Source],
        path: Path,
    ) -> None:
        outcome: Path | Failure
        try:
            await self._fetch(sources, digest, size, path)
            os.chmod(path, OBJECT_MODE)
            outcome = path
        except BaseException:
            outcome = Failure()
            if not outcome.check(CancelledError):
                self.log.warn(
                    "cannot download {digest}: {error}", digest=digest, error=outcome.value
                )
        finally:
            del self._downloads[digest]
        if isinstance(outcome, Failure) and outcome.check(CancelledError):
            # Cancelled for want of waiters, yet someone asked again before it stopped: theirs
            # is a failure to fetch, not a cancellation of their own.
            outcome = Failure(CacheError(f"the download of {digest} was cancelled"))
        # Callbacks may start new work; fire them once the bookkeeping above is consistent.
        for waiter in download.waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    async def ensure_program(self, digest: str, size: int, sources: Sequence[Source]) -> Path:
        """An executable copy of the single-file binary ``digest``.

        A copy rather than the object itself, because the mode belongs to the inode and
        objects are shared, read-only, with attempts' inputs.
        """
        program = self.root / "programs" / digest
        if program.exists():
            return program
        source = await self.ensure(digest, size, sources)
        if not program.exists():
            tmp = program.with_name(f".{digest}.{uuid.uuid4().hex}")
            shutil.copyfile(source, tmp)
            os.chmod(tmp, PROGRAM_MODE)
            os.replace(tmp, program)
        return program

    async def ensure_bundle(self, digest: str, size: int, sources: Sequence[Source]) -> Path:
        """The directory where bundle ``digest`` is unpacked, unpacking it the first time."""
        directory = self.root / "bundles" / digest
        if directory.is_dir():
            return directory
        archive = await self.ensure(digest, size, sources)
        if not directory.is_dir():
            # All or nothing (unpack_bundle renames a finished folder into place). Synchronous,
            # on the reactor thread: bundles are programs, small next to data.
            unpack_bundle(archive, directory)
        return directory

    def staging_path(self) -> Path:
        """A fresh name for a file on its way into the cache (see :meth:`adopt`)."""
        return self.root / "staging" / uuid.uuid4().hex

    def adopt(self, path: Path, digest: str) -> Path:
        """Move the file ``path``, whose content hashes to ``digest``, into the cache."""
        target = self.path_for(digest)
        if target.exists():
            path.unlink()
        else:
            _make_visible(path, target)
        return target


def _make_visible(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(source, OBJECT_MODE)
    os.replace(source, target)


def _check_digest(digest: str) -> None:
    # The digest becomes a file name: a malformed one could name a path outside the cache.
    if not DIGEST_PATTERN.match(digest):
        raise CacheError(f"not a SHA-256 digest: {digest!r}")
