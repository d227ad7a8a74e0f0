"""The worker's object cache: binaries, inputs and outputs by digest, bundles unpacked once.

Layout under the cache root (``<data>/cache``):

    objects/ab/<digest>       every object, read-only, named by its SHA-256
    objects/ab/<digest>.part  a download in progress (resumed after a restart)
    programs/<digest>         an executable copy of a single-file binary
    bundles/<digest>/         a bundle archive unpacked, read-only
    bundles/<digest>.json     the SHA-256 of each file of that bundle, taken when unpacked
    staging/                  an attempt's outputs on their way in, before they are hashed

Files only ever appear under their final names by an atomic rename, so whatever is found there
is complete and, for downloads, verified against its digest. Objects are read-only because
attempts get hard links to them: a task must not be able to change, through its input, what
the next task reads.

The cache holds at most ``limit`` bytes (objects, program copies and unpacked bundles counted
together, by digest): when it grows past it, the least recently used digests that no attempt
holds (:meth:`ObjectCache.pin`) are evicted, logged, and kept in a list the worker reports to
the coordinator in its next Work Alive. The order of use survives restarts as the objects'
modification times.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.bundle import unpack_bundle
from xwch.protocol.objects import Source
from xwch.protocol.wire import DIGEST_PATTERN
from xwch.transfer.digest import sha256_file

from .files import remove_tree, tree_size

# Downloads one object into a file: (sources, digest, size, destination). The destination must
# appear only complete and verified against the digest (``xwch.transfer.download_object`` does).
Fetch = Callable[[Sequence[Source], str, int, Path], Awaitable[None]]

OBJECT_MODE = 0o444
PROGRAM_MODE = 0o555
BUNDLE_DIR_MODE = 0o555


class CacheError(Exception):
    """An object cannot be made available (no source, bad bundle entry...)."""


@dataclass
class _Download:
    """One download in flight and the callers waiting for it."""

    deferred: Deferred[None] | None = None
    waiters: list[Deferred[Path]] = field(default_factory=list)


@dataclass(frozen=True)
class CacheUsage:
    used: int
    limit: int | None
    objects: int
    evicted: int


class ObjectCache:
    """Objects by digest on local disk, each downloaded once however many attempts want it."""

    log = Logger()

    def __init__(self, root: Path, fetch: Fetch, limit: int | None = None) -> None:
        self.root = root
        self._fetch = fetch
        self._downloads: dict[str, _Download] = {}
        self.limit = limit
        # Bytes on disk by digest, least recently used first.
        self._sizes: OrderedDict[str, int] = OrderedDict()
        # Their sum, kept as they change: summing at every store cost a worker holding thousands
        # of small outputs a few percent of its CPU.
        self._used = 0
        self._pins: dict[str, int] = {}
        self._evicted: list[str] = []
        self._evicted_total = 0
        # Bundles whose unpacked files were checked against their manifest by this process.
        self._verified_bundles: set[str] = set()
        self._over_limit_warned = False
        for sub in ("objects", "programs", "bundles", "staging"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Outputs a previous run was taking in when it died belong to attempts long given up.
        for leftover in (root / "staging").iterdir():
            remove_tree(leftover)
        self._scan()

    # Looking up and fetching

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
            self._touch(digest)
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
            self._grew(digest, path.stat().st_size)
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
        self._evict_to_limit()

    async def ensure_program(self, digest: str, size: int, sources: Sequence[Source]) -> Path:
        """An executable copy of the single-file binary ``digest``.

        A copy rather than the object itself, because the mode belongs to the inode and
        objects are shared, read-only, with attempts' inputs. The copy is checked against the
        digest as it is made; the launcher checks it again right before each run.
        """
        program = self.program_path(digest)
        if program.exists():
            self._touch(digest)
            return program
        source = await self.ensure(digest, size, sources)
        if not program.exists():
            tmp = program.with_name(f".{digest}.{uuid.uuid4().hex}")
            try:
                shutil.copyfile(source, tmp)
                if sha256_file(tmp)[0] != digest:
                    self.forget(digest, "its bytes no longer match its digest")
                    raise CacheError(
                        f"the cached program {digest} was corrupted; removed, to be fetched again"
                    )
                os.chmod(tmp, PROGRAM_MODE)
                os.replace(tmp, program)
            finally:
                tmp.unlink(missing_ok=True)
            self._grew(digest, program.stat().st_size)
        return program

    def program_path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / "programs" / digest

    async def ensure_bundle(self, digest: str, size: int, sources: Sequence[Source]) -> Path:
        """The directory where bundle ``digest`` is unpacked, unpacking it the first time.

        The first use by this process checks every unpacked file against the manifest taken
        when it was unpacked; a bundle changed on disk is unpacked again.
        """
        _check_digest(digest)
        directory = self.root / "bundles" / digest
        if directory.is_dir() and digest not in self._verified_bundles:
            problem = self._bundle_problem(digest, directory)
            if problem is None:
                self._verified_bundles.add(digest)
            else:
                self.log.warn(
                    "unpacked bundle {digest} {problem}: unpacking it again",
                    digest=digest,
                    problem=problem,
                )
                self._remove_bundle(digest)
        if directory.is_dir():
            self._touch(digest)
            return directory
        archive = await self.ensure(digest, size, sources)
        if not directory.is_dir():
            if sha256_file(archive)[0] != digest:
                self.forget(digest, "its bytes no longer match its digest")
                raise CacheError(
                    f"the cached bundle {digest} was corrupted; removed, to be fetched again"
                )
            # All or nothing (unpack_bundle renames a finished folder into place). Synchronous,
            # on the reactor thread: bundles are programs, small next to data.
            unpack_bundle(archive, directory)
            self._seal_bundle(digest, directory)
            self._verified_bundles.add(digest)
            self._grew(digest, tree_size(directory))
        return directory

    def bundle_file_digest(self, digest: str, name: str) -> str | None:
        """The SHA-256 the file ``name`` of bundle ``digest`` had when it was unpacked."""
        try:
            manifest = json.loads(self._manifest_path(digest).read_text())
        except (OSError, ValueError):
            return None
        value = manifest.get(name) if isinstance(manifest, dict) else None
        return value if isinstance(value, str) else None

    def _manifest_path(self, digest: str) -> Path:
        return self.root / "bundles" / f"{digest}.json"

    def _seal_bundle(self, digest: str, directory: Path) -> None:
        """Record each file's digest, and make the whole bundle read-only."""
        manifest: dict[str, str] = {}
        for folder, _dirs, names in os.walk(directory):
            for name in names:
                path = Path(folder) / name
                manifest[path.relative_to(directory).as_posix()] = sha256_file(path)[0]
                mode = path.stat().st_mode
                os.chmod(path, PROGRAM_MODE if mode & 0o111 else OBJECT_MODE)
        tmp = self._manifest_path(digest).with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, self._manifest_path(digest))
        for folder, _dirs, _names in os.walk(directory, topdown=False):
            os.chmod(folder, BUNDLE_DIR_MODE)

    def _bundle_problem(self, digest: str, directory: Path) -> str | None:
        """What is wrong with an unpacked bundle (None: every file as unpacked)."""
        try:
            manifest = json.loads(self._manifest_path(digest).read_text())
        except (OSError, ValueError):
            return "has no manifest"
        found: set[str] = set()
        for folder, _dirs, names in os.walk(directory):
            for name in names:
                path = Path(folder) / name
                relative = path.relative_to(directory).as_posix()
                found.add(relative)
                if path.is_symlink() or manifest.get(relative) != sha256_file(path)[0]:
                    return f"has a changed file {relative}"
        if found != set(manifest):
            return "has files added or removed"
        return None

    def _remove_bundle(self, digest: str) -> None:
        remove_tree(self.root / "bundles" / digest)
        self._manifest_path(digest).unlink(missing_ok=True)
        self._verified_bundles.discard(digest)

    # Outputs

    def staging_path(self) -> Path:
        """A fresh name for a file on its way into the cache (see :meth:`adopt`)."""
        return self.root / "staging" / uuid.uuid4().hex

    def keep_bytes(self, digest: str, content: bytes) -> Path:
        """The local path of object ``digest``, whose bytes (checked against it by the caller)
        came inside a message: written into the cache unless already there."""
        if self.has(digest, len(content)):
            self._touch(digest)
            return self.path_for(digest)
        staged = self.staging_path()
        # Without fsync, as every download into the cache (crashsafe drops a torn cache).
        staged.write_bytes(content)
        return self.adopt(staged, digest)

    def adopt(self, path: Path, digest: str) -> Path:
        """Move the file ``path``, whose content hashes to ``digest``, into the cache."""
        target = self.path_for(digest)
        if target.exists():
            path.unlink()
            self._touch(digest)
        else:
            _make_visible(path, target)
            self._grew(digest, target.stat().st_size)
            self._evict_to_limit()
        return target

    # Size, pins and eviction

    def pin(self, digest: str) -> None:
        """An attempt holds ``digest``: it is not evicted until :meth:`unpin`."""
        self._pins[digest] = self._pins.get(digest, 0) + 1

    def unpin(self, digest: str) -> None:
        count = self._pins.get(digest, 0) - 1
        if count > 0:
            self._pins[digest] = count
        else:
            self._pins.pop(digest, None)

    def set_limit(self, limit: int | None) -> None:
        """A new size limit (None: none), applied at once."""
        if limit != self.limit:
            self.limit = limit
            self._over_limit_warned = False
            self._evict_to_limit()

    def usage(self) -> CacheUsage:
        return CacheUsage(
            used=self._used,
            limit=self.limit,
            objects=len(self._sizes),
            evicted=self._evicted_total,
        )

    def digests(self, limit: int | None = None) -> list[str]:
        """What the cache holds, the most recently used first (at most ``limit``)."""
        held = reversed(self._sizes)
        return [d for _, d in zip(range(limit), held, strict=False)] if limit else list(held)

    def take_evicted(self) -> list[str]:
        """The digests evicted since the last call (for the next Work Alive)."""
        taken, self._evicted = self._evicted, []
        return taken

    def restore_evicted(self, digests: Sequence[str]) -> None:
        """Digests taken but not reported after all (the Work Alive failed)."""
        self._evicted[:0] = [d for d in digests if d not in self._sizes]

    def forget(self, digest: str, why: str) -> None:
        """Remove everything cached under ``digest`` (a corrupted object, say)."""
        self.log.warn("removing {digest} from the cache: {why}", digest=digest, why=why)
        self._remove(digest)

    def _remove(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)
        self.program_path(digest).unlink(missing_ok=True)
        self._remove_bundle(digest)
        size = self._sizes.pop(digest, None)
        if size is not None:
            self._used -= size
            self._evicted.append(digest)
            self._evicted_total += 1

    def _grew(self, digest: str, size: int) -> None:
        self._sizes[digest] = self._sizes.get(digest, 0) + size
        self._sizes.move_to_end(digest)
        self._used += size

    def _touch(self, digest: str) -> None:
        if digest in self._sizes:
            self._sizes.move_to_end(digest)
        # The order of use, kept across restarts; a file gone meanwhile is no matter.
        try:
            os.utime(self.path_for(digest))
        except OSError:
            pass

    def _evict_to_limit(self) -> None:
        if self.limit is None:
            return
        # Only over the limit is the whole cache walked.
        for digest in list(self._sizes) if self._used > self.limit else ():
            if self._used <= self.limit:
                break
            if digest in self._pins or digest in self._downloads:
                continue
            size = self._sizes[digest]
            self._remove(digest)
            self.log.info(
                "evicted {digest} ({size} bytes) to keep the cache under {limit} bytes",
                digest=digest,
                size=size,
                limit=self.limit,
            )
        used = self._used
        if used > self.limit and not self._over_limit_warned:
            self._over_limit_warned = True
            self.log.warn(
                "the cache holds {used} bytes, over its limit of {limit}: what running attempts "
                "need cannot be evicted",
                used=used,
                limit=self.limit,
            )
        elif used <= self.limit:
            self._over_limit_warned = False

    def _scan(self) -> None:
        """Size and order of use of what a previous run left."""
        found: dict[str, tuple[float, int]] = {}

        def add(digest: str, path: Path) -> None:
            if not DIGEST_PATTERN.match(digest):
                return
            try:
                mtime = path.lstat().st_mtime
            except FileNotFoundError:
                return
            when, size = found.get(digest, (mtime, 0))
            found[digest] = (max(when, mtime), size + tree_size(path))

        for shard in (self.root / "objects").iterdir():
            for path in shard.iterdir() if shard.is_dir() else ():
                add(path.name, path)
        for path in (self.root / "programs").iterdir():
            add(path.name, path)
        for path in (self.root / "bundles").iterdir():
            if path.is_dir():
                add(path.name, path)
        for digest, (_when, size) in sorted(found.items(), key=lambda item: item[1][0]):
            self._sizes[digest] = size
        self._used = sum(self._sizes.values())


def _make_visible(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(source, OBJECT_MODE)
    os.replace(source, target)


def _check_digest(digest: str) -> None:
    # The digest becomes a file name: a malformed one could name a path outside the cache.
    if not DIGEST_PATTERN.match(digest):
        raise CacheError(f"not a SHA-256 digest: {digest!r}")
