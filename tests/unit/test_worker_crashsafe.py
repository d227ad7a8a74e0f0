"""The worker's cache, written without fsync, is dropped only when a crash may have torn it."""

from __future__ import annotations

from pathlib import Path

from xwch.worker.crashsafe import begin_run, end_run, may_be_torn


def _cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    (root / "objects" / "ab").mkdir(parents=True)
    (root / "objects" / "ab" / "object").write_text("bytes")
    return root


def test_a_clean_stop_keeps_the_cache_across_a_reboot(tmp_path: Path) -> None:
    """After a clean stop the machine may restart: cached objects are kept."""
    root = _cache(tmp_path)
    assert not begin_run(root, "boot-1")
    end_run(root)
    assert not begin_run(root, "boot-2")
    assert (root / "objects" / "ab" / "object").exists()


def test_a_killed_worker_restarted_on_the_same_boot_keeps_its_cache(tmp_path: Path) -> None:
    """A killed process loses no written bytes: the cache is kept."""
    root = _cache(tmp_path)
    begin_run(root, "boot-1")
    assert not may_be_torn(root, "boot-1")
    assert not begin_run(root, "boot-1")
    assert (root / "objects" / "ab" / "object").exists()


def test_a_reboot_after_an_unclean_stop_drops_the_cache(tmp_path: Path) -> None:
    """A crash of the machine may have lost unflushed bytes: every cached object is dropped."""
    root = _cache(tmp_path)
    begin_run(root, "boot-1")
    assert may_be_torn(root, "boot-2")
    assert begin_run(root, "boot-2")
    assert not (root / "objects").exists()
    # The next run starts from a trusted, empty cache.
    assert not may_be_torn(root, "boot-2")
