"""Attempts' folders given back a batch at a time (worker/releases.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xwch.worker.releases import FolderReleases, off_reactor
from xwch.worker.workfolders import TMP_DIR, WorkFolders


class HeldRuns:
    """Stands in for the thread pool: each call waits until the test lets it run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, call: Callable[..., Any], *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.calls.append((call, args, done))
        return done

    def paths(self, n: int) -> list[str]:
        return [p.name for p in self.calls[n][1][1]]

    def run(self, n: int) -> None:
        call, args, done = self.calls[n]
        done.callback(call(*args))


class RefusingFolders(WorkFolders):
    """Folders whose release fails for one name."""

    def __init__(self, root: Path, refused: str) -> None:
        super().__init__(root)
        self.refused = refused
        self.released: list[str] = []

    def release(self, workdir: Path) -> None:
        if workdir.name == self.refused:
            raise PermissionError(f"cannot remove {workdir}")
        self.released.append(workdir.name)


class FolderReleasesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.root.mkdir()
        self.runs = HeldRuns()
        self.folders = RefusingFolders(self.root, refused="bad")
        self.releases = FolderReleases(Clock(), self.folders, run=self.runs)

    def test_a_folder_alone_goes_at_once(self) -> None:
        done = self.releases.release(self.root / "a1")
        self.assertEqual(self.runs.paths(0), ["a1"])
        self.assertNoResult(done)
        self.runs.run(0)
        self.successResultOf(done)
        self.assertEqual(self.folders.released, ["a1"])

    def test_folders_released_meanwhile_go_together_in_one_hop(self) -> None:
        first = self.releases.release(self.root / "a1")
        later = [self.releases.release(self.root / name) for name in ("a2", "a3")]
        self.assertEqual(len(self.runs.calls), 1)
        self.runs.run(0)
        self.successResultOf(first)
        self.assertEqual(self.runs.paths(1), ["a2", "a3"])
        self.runs.run(1)
        for done in later:
            self.successResultOf(done)
        self.assertEqual((self.releases.batches, self.releases.released), (2, 3))

    def test_a_folder_that_cannot_be_released_fails_alone(self) -> None:
        self.releases.release(self.root / "a1")
        bad = self.releases.release(self.root / "bad")
        good = self.releases.release(self.root / "a3")
        self.runs.run(0)
        self.runs.run(1)
        self.failureResultOf(bad, PermissionError)
        self.successResultOf(good)
        self.assertEqual(self.folders.released, ["a1", "a3"])

    def test_on_a_reactor_without_threads_folders_are_emptied_inline(self) -> None:
        """With the real WorkFolders: the folder is emptied and kept for the next attempt."""
        folders = WorkFolders(self.root)
        workdir = self.root / "a1"
        folders.make(workdir)
        (workdir / "out.txt").write_text("1\n")
        (workdir / TMP_DIR / "scratch").write_text("x")
        self.successResultOf(FolderReleases(Clock(), folders).release(workdir))
        self.assertFalse(workdir.exists())
        self.assertEqual(folders.spares, 1)

    def test_off_reactor_inline_fails_as_the_call_failed(self) -> None:
        def broken() -> None:
            raise OSError("disk gone")

        self.failureResultOf(off_reactor(Clock(), broken), OSError)
        self.assertEqual(self.successResultOf(off_reactor(Clock(), lambda: 7)), 7)
