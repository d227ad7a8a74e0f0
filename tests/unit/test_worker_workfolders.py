"""Working directories used again: only once as empty and plain as fresh ones."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from xwch.worker.workfolders import SPARE, TMP_DIR, WorkFolders, is_attempt_folder_name


def _supports_user_attributes(path: Path) -> bool:
    try:
        os.setxattr(path, "user.xwch-probe", b"1")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    os.removexattr(path, "user.xwch-probe")
    return True


class WorkFoldersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        self.folders = WorkFolders(self.root, keep=2)

    def used(self, name: str) -> Path:
        """A working directory made, then left as a task might leave it."""
        workdir = self.root / name
        self.folders.make(workdir)
        (workdir / "out.txt").write_text("the last task's\n")
        (workdir / TMP_DIR / "scratch").write_text("temporary\n")
        locked = workdir / "sub" / "locked"
        locked.mkdir(parents=True)
        (locked / "f").write_text("x")
        locked.chmod(0o500)  # a folder the task made read-only
        return workdir

    def test_a_fresh_folder_is_empty_but_for_its_temporary_folder(self) -> None:
        workdir = self.root / "a1"
        self.folders.make(workdir)
        self.assertEqual(os.listdir(workdir), [TMP_DIR])
        self.assertEqual(os.listdir(workdir / TMP_DIR), [])

    def test_a_released_folder_comes_back_empty_for_the_next_attempt(self) -> None:
        """The same directory (no new inode), renamed into place, with nothing of the last
        attempt in it, its temporary folder included."""
        first = self.used("a1")
        inode = first.stat().st_ino
        self.folders.release(first)
        self.assertFalse(first.exists())
        self.assertEqual(self.folders.spares, 1)
        second = self.root / "a2"
        self.folders.make(second)
        self.assertEqual(second.stat().st_ino, inode)
        self.assertEqual(os.listdir(second), [TMP_DIR])
        self.assertEqual(os.listdir(second / TMP_DIR), [])
        self.assertEqual(self.folders.spares, 0)

    def test_a_folder_a_task_locked_is_unlocked_and_used_again(self) -> None:
        """A task that took its folder's modes away does not pass them on."""
        workdir = self.used("a1")
        fresh_mode = stat.S_IMODE(workdir.stat().st_mode)
        (workdir / TMP_DIR).chmod(0)
        workdir.chmod(0o500)
        self.folders.release(workdir)
        again = self.root / "a2"
        self.folders.make(again)
        self.assertEqual(stat.S_IMODE(again.stat().st_mode), fresh_mode)
        self.assertEqual(stat.S_IMODE((again / TMP_DIR).stat().st_mode), fresh_mode)
        self.assertEqual(os.listdir(again), [TMP_DIR])

    def test_extended_attributes_a_task_set_are_cleared(self) -> None:
        workdir = self.used("a1")
        if not _supports_user_attributes(workdir):
            self.skipTest("no user extended attributes on this file system")
        os.setxattr(workdir, "user.note", b"for the next task")
        os.setxattr(workdir / TMP_DIR, "user.note", b"for the next task")
        self.folders.release(workdir)
        again = self.root / "a2"
        self.folders.make(again)
        self.assertEqual(self.folders.spares, 0)
        self.assertEqual(os.listxattr(again), [])
        self.assertEqual(os.listxattr(again / TMP_DIR), [])

    def test_a_temporary_folder_replaced_by_a_link_is_not_used_again(self) -> None:
        """A link where the temporary folder was: the folder is removed, the target kept."""
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "keep.txt").write_text("not the task's\n")
        workdir = self.used("a1")
        (workdir / TMP_DIR / "scratch").unlink()
        (workdir / TMP_DIR).rmdir()
        (workdir / TMP_DIR).symlink_to(outside)
        self.folders.release(workdir)
        self.assertFalse(workdir.exists())
        self.assertEqual(self.folders.spares, 0)
        self.assertEqual((outside / "keep.txt").read_text(), "not the task's\n")

    def test_a_folder_gone_is_nothing_to_keep(self) -> None:
        self.folders.release(self.root / "never-made")
        self.assertEqual(self.folders.spares, 0)

    def test_no_more_than_keep_folders_wait(self) -> None:
        """Beyond ``keep``, released folders are removed."""
        workdirs = [self.used(f"a{n}") for n in range(3)]
        for workdir in workdirs:
            self.folders.release(workdir)
        self.assertEqual(self.folders.spares, 2)
        self.assertEqual(len(os.listdir(self.root / SPARE)), 2)
        self.assertFalse(any(w.exists() for w in workdirs))

    def test_keep_zero_removes_every_folder(self) -> None:
        folders = WorkFolders(self.root, keep=0)
        workdir = self.root / "a1"
        folders.make(workdir)
        folders.release(workdir)
        self.assertFalse(workdir.exists())
        self.assertEqual(folders.spares, 0)

    def test_what_was_at_the_attempts_path_is_replaced(self) -> None:
        """A leftover at the attempt's path (an earlier run's) is gone, a spare in its place."""
        self.folders.release(self.used("a1"))
        leftover = self.root / "a2"
        leftover.mkdir()
        (leftover / "old.txt").write_text("old\n")
        self.folders.make(leftover)
        self.assertEqual(os.listdir(leftover), [TMP_DIR])

    def test_make_at_once_renames_a_spare_into_place(self) -> None:
        """With a spare waiting and nothing at the path, the folder is made by one rename."""
        first = self.used("a1")
        inode = first.stat().st_ino
        self.folders.release(first)
        second = self.root / "a2"
        self.assertTrue(self.folders.make_at_once(second))
        self.assertEqual(second.stat().st_ino, inode)
        self.assertEqual(os.listdir(second), [TMP_DIR])
        self.assertEqual(self.folders.spares, 0)

    def test_make_at_once_leaves_the_other_cases_to_make(self) -> None:
        """No spare, or something already at the path: nothing is done, the spare kept."""
        self.assertFalse(self.folders.make_at_once(self.root / "a1"))
        self.assertFalse((self.root / "a1").exists())
        self.folders.release(self.used("a2"))
        leftover = self.root / "a3"
        leftover.mkdir()
        (leftover / "old.txt").write_text("old\n")
        self.assertFalse(self.folders.make_at_once(leftover))
        self.assertEqual(os.listdir(leftover), ["old.txt"])
        self.assertEqual(self.folders.spares, 1)

    def test_attempt_folder_names(self) -> None:
        self.assertTrue(is_attempt_folder_name("a3f9c2"))
        for bad in ("", ".", "..", SPARE, ".hidden", "a/b", "a\0b"):
            self.assertFalse(is_attempt_folder_name(bad), bad)
