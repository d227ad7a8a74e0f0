"""One coordinator per SQLite store: the second is refused at start, naming the first.

Several coordinators share a store only on PostgreSQL, whose transactions and locks are made for
it. Two on one SQLite file would each believe itself alone: both would hand out the same ready
tasks. So a coordinator on SQLite holds an exclusive ``flock`` on a file beside the store for as
long as it runs, with its pid and URL written inside; the kernel lets go of the lock when the
process ends however it ends (a crash never leaves a stale lock), and a second coordinator that
finds the lock taken reads who holds it and says so.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import sqlalchemy as sa

from xwch.errors import XwchError


class StoreHeld(XwchError):
    """This coordinator cannot have the SQLite store: another one runs on it, or its folder
    is missing."""


class StoreLock:
    """The lock of one SQLite store, held until the process ends (or :meth:`release`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def tell(self, url: str) -> None:
        """Write who holds the store (a refused coordinator shows it)."""
        text = f"pid {os.getpid()}, {url}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor lets go of the flock
            self._fd = -1


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite store; None for another database or an in-memory one."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def hold_store(db_url: str) -> StoreLock | None:
    """Take the store of ``db_url`` for this coordinator if it is SQLite (None otherwise).

    Raises :class:`StoreHeld`, naming the holder, when another coordinator runs on it.
    """
    store = sqlite_path(db_url)
    if store is None:
        return None
    path = store.with_name(store.name + ".coordinator")
    if not store.parent.is_dir():
        raise StoreHeld(f"the folder of the SQLite store {store} does not exist: create it first")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "an unknown process"
        os.close(fd)
        raise StoreHeld(
            f"another coordinator ({holder}) runs on the SQLite store {store}; several "
            "coordinators share a store only on PostgreSQL: start each with "
            "--db postgresql://USER@HOST/DATABASE"
        ) from None
    lock = StoreLock(path, fd)
    lock.tell("starting")
    return lock
