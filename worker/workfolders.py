"""Attempts' working directories, emptied and used again rather than removed and made afresh.

Making a directory allocates an inode, and on ext4 without a journal (the usual root file
system of cloud virtual machines) each allocation first skips every inode of its group freed in
the last half minute (``recently_deleted``): at hundreds of short tasks per second, making and
removing two directories per attempt cost more CPU than running the programs. Renaming an
emptied folder into place allocates nothing.

A folder is used again only once it is exactly as a fresh one would be: nothing left in it or in
its temporary folder, both plain directories of the worker with their first mode, no ACL or
extended attribute a task could set (left there, one could reach the next task). Anything else, or any error on
the way, and it is removed as before. At most ``keep`` emptied folders wait, under ``SPARE``.

The methods block (they walk and remove files): callers run them in a thread, so they are
thread-safe; :meth:`WorkFolders.make_at_once` is the exception, a rename or nothing.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from pathlib import Path

from .files import remove_tree

TMP_DIR = ".tmp"
# Where emptied folders wait. Attempt ids never start with a dot (see is_attempt_folder_name).
SPARE = ".spare"


def is_attempt_folder_name(name: str) -> bool:
    """Whether ``name`` may name an attempt's folder: not a spare's, not hidden, one part."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


class WorkFolders:
    """Makes and takes back the working directories of a worker's attempts under ``root``."""

    def __init__(self, root: Path, keep: int = 16) -> None:
        self.root = root
        self._keep = keep
        self._lock = threading.Lock()
        self._spares: list[Path] = []
        self._names = itertools.count()
        # The mode of a folder made here (the process's umask applied), to compare with.
        self._mode: int | None = None

    @property
    def spares(self) -> int:
        """Emptied folders waiting to be used again."""
        with self._lock:
            return len(self._spares)

    def make(self, workdir: Path) -> None:
        """An empty working directory at ``workdir`` with its temporary folder (whatever was
        there is gone)."""
        remove_tree(workdir)
        spare = self._take_spare()
        if spare is not None:
            try:
                os.rename(spare, workdir)
                return
            except OSError:
                remove_tree(spare)
        (workdir / TMP_DIR).mkdir(parents=True)
        if self._mode is None:
            self._mode = stat.S_IMODE(os.lstat(workdir).st_mode)

    def make_at_once(self, workdir: Path) -> bool:
        """Make ``workdir`` from a spare if that is one rename (a spare waits, nothing is at
        ``workdir``): the common case, cheap enough for the reactor, which then saves a hop to
        a thread and back. False: nothing done, :meth:`make` is needed."""
        if os.path.lexists(workdir):
            return False
        spare = self._take_spare()
        if spare is None:
            return False
        try:
            os.rename(spare, workdir)
        except OSError:
            with self._lock:
                self._spares.append(spare)
            return False
        return True

    def release(self, workdir: Path) -> None:
        """Take back an attempt's working directory: kept empty for another, or removed."""
        if self._keep > 0 and self._empty(workdir):
            spare = self._spare_name()
            if spare is not None:
                try:
                    os.rename(workdir, spare)
                except OSError:
                    pass
                else:
                    with self._lock:
                        self._spares.append(spare)
                    return
        remove_tree(workdir)

    def _take_spare(self) -> Path | None:
        with self._lock:
            return self._spares.pop() if self._spares else None

    def _spare_name(self) -> Path | None:
        """A free name for one more spare, or None when there are enough of them."""
        with self._lock:
            if len(self._spares) >= self._keep:
                return None
            name = self.root / SPARE / str(next(self._names))
        try:
            name.parent.mkdir(exist_ok=True)
        except OSError:
            return None
        return name

    def _empty(self, workdir: Path) -> bool:
        """Whether ``workdir`` is now as :meth:`make` makes it (emptied here if need be)."""
        mode = self._mode
        if mode is None:
            return False
        tmp = workdir / TMP_DIR
        try:
            if not _plain_folder(workdir):
                return False
            # Mode first: a task may have taken away the worker's right to list or remove.
            os.chmod(workdir, mode)
            _remove_entries(workdir, but=TMP_DIR)
            if not _plain_folder(tmp):
                return False
            os.chmod(tmp, mode)
            _remove_entries(tmp)
            return _no_attributes(workdir) and _no_attributes(tmp)
        except OSError:
            return False


def _remove_entries(folder: Path, but: str | None = None) -> None:
    """Remove everything in ``folder`` except the entry named ``but``."""
    with os.scandir(folder) as entries:
        names = [entry.name for entry in entries if entry.name != but]
    for name in names:
        remove_tree(folder / name)


def _plain_folder(path: Path) -> bool:
    """A directory (not a link to one) of this process's user, or made so."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return False
    if st.st_uid != os.geteuid() or st.st_gid != os.getegid():
        # Given to the sandbox user for the attempt: back to the worker (a root worker).
        os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
    return True


def _no_attributes(path: Path) -> bool:
    """Removes the extended attributes a task may set on ``path`` (its own, ``user.*``, and
    ACLs, ``system.*``); False if that fails. ``security.*`` and ``trusted.*`` need privileges
    a task does not have, and may be set on every new folder (SELinux labels): left alone."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        # A file system without extended attributes has none to clear.
        return e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
    for name in names:
        if name.startswith(("user.", "system.")):
            try:
                os.removexattr(path, name, follow_symlinks=False)
            except OSError:
                return False
    return True
