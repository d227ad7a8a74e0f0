"""The worker's object cache: one download per object, however many attempts want it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from xwch.bundle import pack_bundle
from xwch.errors import DigestMismatch
from xwch.protocol import Source
from xwch.worker.cache import CacheError, ObjectCache

SOURCES = (Source(url="http://warehouse.test", capability="cap"),)
DATA = b"palette\n"
DIGEST = hashlib.sha256(DATA).hexdigest()


class ScriptedFetch:
    """Downloads that end when the test says, recording each start."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.pending: list[Deferred[None]] = []
        self.cancelled = 0
        self.objects: dict[str, bytes] = {DIGEST: DATA}

    async def __call__(self, sources: Sequence[Source], digest: str, size: int, dest: Path) -> None:
        self.started.append(digest)
        d: Deferred[None] = Deferred(lambda _: self._count_cancel())
        self.pending.append(d)
        await d
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.objects[digest])

    def _count_cancel(self) -> None:
        self.cancelled += 1

    def finish(self) -> None:
        self.pending.pop(0).callback(None)

    def fail(self, error: Exception) -> None:
        self.pending.pop(0).errback(error)


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.fetch = ScriptedFetch()
        self.cache = ObjectCache(self.root, self.fetch)

    def ensure(self, digest: str = DIGEST, size: int = len(DATA)) -> Deferred[Path]:
        return Deferred.fromCoroutine(self.cache.ensure(digest, size, SOURCES))

    def test_concurrent_requests_share_one_download(self) -> None:
        """Two attempts wanting the same input make one download and both get the file."""
        first, second = self.ensure(), self.ensure()
        self.assertEqual(self.fetch.started, [DIGEST])
        self.fetch.finish()
        path = self.cache.path_for(DIGEST)
        self.assertEqual(self.successResultOf(first), path)
        self.assertEqual(self.successResultOf(second), path)
        self.assertEqual(path.read_bytes(), DATA)
        self.assertEqual(path, self.root / "objects" / DIGEST[:2] / DIGEST)

    def test_cached_object_is_not_downloaded_again(self) -> None:
        """An object already in the cache is used as it is, read-only."""
        d = self.ensure()
        self.fetch.finish()
        self.successResultOf(d)
        self.successResultOf(self.ensure())
        self.assertEqual(self.fetch.started, [DIGEST])
        self.assertEqual(os.stat(self.cache.path_for(DIGEST)).st_mode & 0o777, 0o444)

    def test_failed_download_fails_every_waiter_and_is_retried_later(self) -> None:
        """A download that fails fails all who waited; the next request tries again."""
        first, second = self.ensure(), self.ensure()
        self.fetch.fail(DigestMismatch("bad bytes"))
        self.failureResultOf(first, DigestMismatch)
        self.failureResultOf(second, DigestMismatch)
        third = self.ensure()
        self.assertEqual(self.fetch.started, [DIGEST, DIGEST])
        self.fetch.finish()
        self.successResultOf(third)

    def test_download_stops_when_nobody_waits_for_it(self) -> None:
        """When every attempt wanting an object is killed, its download is cancelled."""
        first, second = self.ensure(), self.ensure()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(self.fetch.cancelled, 0)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.fetch.cancelled, 1)
        self.assertFalse(self.cache.has(DIGEST))

    def test_object_without_source_is_an_error(self) -> None:
        """An object neither cached nor available anywhere fails clearly."""
        d = Deferred.fromCoroutine(self.cache.ensure(DIGEST, len(DATA), ()))
        self.failureResultOf(d, CacheError)

    def test_program_is_an_executable_copy(self) -> None:
        """A single-file binary runs from an executable copy; the object stays read-only."""
        d = Deferred.fromCoroutine(self.cache.ensure_program(DIGEST, len(DATA), SOURCES))
        self.fetch.finish()
        program = self.successResultOf(d)
        self.assertEqual(os.stat(program).st_mode & 0o777, 0o555)
        self.assertEqual(program.read_bytes(), DATA)
        self.assertEqual(os.stat(self.cache.path_for(DIGEST)).st_mode & 0o777, 0o444)

    def test_bundle_is_unpacked_once(self) -> None:
        """A bundle is unpacked the first time it is needed and reused after."""
        source = self.root.parent / "bundle-src"
        source.mkdir(parents=True)
        (source / "run.sh").write_text("#!/bin/sh\n")
        archive = self.root.parent / "bundle.tar"
        pack_bundle(source, archive)
        data = archive.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.fetch.objects[digest] = data
        d = Deferred.fromCoroutine(self.cache.ensure_bundle(digest, len(data), SOURCES))
        self.fetch.finish()
        folder = self.successResultOf(d)
        self.assertEqual((folder / "run.sh").read_text(), "#!/bin/sh\n")
        again = Deferred.fromCoroutine(self.cache.ensure_bundle(digest, len(data), SOURCES))
        self.assertEqual(self.successResultOf(again), folder)
        self.assertEqual(self.fetch.started, [digest])

    def test_adopted_output_is_kept_by_digest(self) -> None:
        """An attempt's output moves into the cache under its digest, once."""
        staged = self.cache.staging_path()
        staged.write_bytes(DATA)
        path = self.cache.adopt(staged, DIGEST)
        self.assertEqual(path.read_bytes(), DATA)
        again = self.cache.staging_path()
        again.write_bytes(DATA)
        self.assertEqual(self.cache.adopt(again, DIGEST), path)
        self.assertFalse(again.exists())


def test_malformed_digest_never_names_a_path(tmp_path: Path) -> None:
    """A digest that is not 64 hex digits is refused before it becomes a file name."""
    cache = ObjectCache(tmp_path, ScriptedFetch())
    with pytest.raises(CacheError):
        cache.path_for("../../etc/passwd")
