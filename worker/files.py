"""File helpers shared by the cache and the executor."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, even directories a task made read-only."""

    def make_writable_and_retry(function: Callable[[str], object], failed: str, _: object) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            function(failed)
        except FileNotFoundError:
            pass

    if path.is_symlink():
        path.unlink()
    elif not path.exists():
        return
    elif not path.is_dir():
        path.unlink()
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file ``path``), links not followed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total
