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
from xwch.protocol.objects import Source
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


class EvictionTests(SynchronousTestCase):
    """A cache over its limit drops what was used least recently, never what attempts hold."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.fetch = ScriptedFetch()
        self.cache = ObjectCache(self.root, self.fetch, limit=25)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.fetch.objects[digest] = data
        d = Deferred.fromCoroutine(self.cache.ensure(digest, len(data), SOURCES))
        self.fetch.finish()
        self.successResultOf(d)
        return digest

    def test_least_recently_used_objects_are_evicted_and_reported(self) -> None:
        """Past the limit the oldest unused object goes; the Work Alive list names it once."""
        first = self.put(b"0123456789")
        second = self.put(b"abcdefghij")
        # Used again: now the most recent.
        self.successResultOf(Deferred.fromCoroutine(self.cache.ensure(first, 10, SOURCES)))
        third = self.put(b"ABCDEFGHIJ")
        self.assertTrue(self.cache.has(first) and self.cache.has(third))
        self.assertFalse(self.cache.has(second))
        self.assertEqual(self.cache.take_evicted(), [second])
        self.assertEqual(self.cache.take_evicted(), [])
        usage = self.cache.usage()
        self.assertEqual((usage.used, usage.limit, usage.objects, usage.evicted), (20, 25, 2, 1))

    def test_objects_in_use_are_not_evicted(self) -> None:
        """An object a running attempt holds stays, even past the limit, until released."""
        first = self.put(b"0123456789")
        self.cache.pin(first)
        second = self.put(b"abcdefghij")
        self.put(b"ABCDEFGHIJ")
        self.assertTrue(self.cache.has(first))
        self.assertEqual(self.cache.take_evicted(), [second])
        self.cache.unpin(first)
        self.cache.set_limit(10)
        self.assertFalse(self.cache.has(first))

    def test_a_lower_limit_applies_at_once(self) -> None:
        """Lowering the cache limit evicts down to it without waiting for a download."""
        self.put(b"0123456789")
        self.put(b"abcdefghij")
        self.cache.set_limit(10)
        self.assertEqual(self.cache.usage().used, 10)

    def test_order_of_use_survives_a_restart(self) -> None:
        """A restarted worker knows its cache's size and which objects were used last."""
        first = self.put(b"0123456789")
        second = self.put(b"abcdefghij")
        os.utime(self.cache.path_for(first), (1000, 1000))
        os.utime(self.cache.path_for(second), (2000, 2000))
        again = ObjectCache(self.root, self.fetch, limit=15)
        self.assertEqual(again.usage().used, 20)
        again.set_limit(10)
        self.assertFalse(again.has(first))
        self.assertTrue(again.has(second))


def test_tampered_bundle_is_unpacked_again(tmp_path: Path) -> None:
    """A bundle changed on disk since it was unpacked is found out and unpacked afresh."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "run.sh").write_text("#!/bin/sh\necho good\n")
    archive = tmp_path / "bundle.tar"
    pack_bundle(source, archive)
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    fetch = ScriptedFetch()
    fetch.objects[digest] = data
    cache = ObjectCache(tmp_path / "cache", fetch)
    d = Deferred.fromCoroutine(cache.ensure_bundle(digest, len(data), SOURCES))
    fetch.finish()
    folder = d.result
    entry = folder / "run.sh"
    assert (
        cache.bundle_file_digest(digest, "run.sh")
        == hashlib.sha256(b"#!/bin/sh\necho good\n").hexdigest()
    )
    # Read-only, but its owner can change that: the next worker process checks.
    assert folder.stat().st_mode & 0o222 == 0 and entry.stat().st_mode & 0o222 == 0
    os.chmod(folder, 0o755)
    os.chmod(entry, 0o755)
    entry.write_text("#!/bin/sh\necho evil\n")
    restarted = ObjectCache(tmp_path / "cache", fetch)
    again = Deferred.fromCoroutine(restarted.ensure_bundle(digest, len(data), SOURCES))
    assert (again.result / "run.sh").read_text() == "#!/bin/sh\necho good\n"
