"""The sandbox every attempt runs in, and how much of it this machine can give.

Each attempt gets (the launcher sets it up, see :mod:`xwch.worker.launcher`):

- a process group of its own: killing, stopping or continuing the attempt reaches all of it;
- resource limits: CPU seconds, address space, file size, and a number of processes;
- its working directory as the only place it may write: Landlock where the kernel offers it,
  and, for a worker running as root, a user of no privilege (``nobody``) whose file permissions
  protect the rest of the machine;
- no privilege gain on exec (setuid programs do not elevate);
- its program checked against its digest right before it runs, or against the identity its file
  had when the worker hashed it (:mod:`xwch.worker.program_identity`).

What a machine can give is decided once, at start (:func:`plan_sandbox`), and logged: a worker
as root drops to ``nobody`` only when ``nobody`` can reach the work and cache folders (every
folder above them must be traversable), since otherwise no task could even start.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger

from . import landlock
from .program_identity import FileIdentity

log = Logger()

SANDBOX_USER = "nobody"
# Processes (and threads) an attempt may run at once, above what its user already runs: enough
# for a build or a shell pipeline, far too few for a fork bomb to hurt.
DEFAULT_PROCESSES = 256


@dataclass(frozen=True)
class SandboxUser:
    """The unprivileged user attempts run as."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Sandbox:
    """How one attempt is confined; turned into launcher options by :meth:`launcher_options`."""

    # None: attempts run as the worker's own user.
    user: SandboxUser | None = None
    # Confine writes to the working directory with Landlock.
    landlock: bool = field(default_factory=lambda: landlock.abi_version() > 0)
    # RLIMIT name -> value ("CPU" seconds, "AS" and "FSIZE" bytes).
    limits: Mapping[str, int] = field(default_factory=dict)
    # Processes beyond those the user already runs; None: no limit.
    processes: int | None = DEFAULT_PROCESSES

    @property
    def seals_cache(self) -> bool:
        """Whether no task can change a file of the worker's cache: Landlock confines its writes
        (opening for writing, truncating, renaming, linking) to its working directory, or it
        runs as a user who owns none of them. Only then may the launcher trust a program's
        identity instead of hashing it (:mod:`xwch.worker.program_identity`)."""
        return self.landlock or self.user is not None

    def launcher_options(
        self, workdir: Path, sha256: str | None, trust: FileIdentity | None = None
    ) -> list[str]:
        options: list[str] = []
        if sha256 is not None:
            options += ["--sha256", sha256]
            if trust is not None and self.seals_cache:
                options += ["--known-identity", trust.option()]
        if self.processes is not None:
            options += ["--processes", str(self.processes)]
        if self.landlock:
            options += ["--writable", str(workdir)]
        if self.user is not None:
            options += ["--user", f"{self.user.uid}:{self.user.gid}"]
        return options

    def with_limits(self, limits: Mapping[str, int], processes: int | None) -> Sandbox:
        return Sandbox(self.user, self.landlock, dict(limits), processes)

    def describe(self) -> dict[str, object]:
        """What is in force, for ``xwch-worker status``."""
        return {
            "user": self.user.name if self.user is not None else None,
            "landlock": self.landlock,
            "limits": dict(self.limits),
            "processes": self.processes,
        }


def lookup_user(name: str) -> SandboxUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return SandboxUser(name, entry.pw_uid, entry.pw_gid)


def blocking_folder(path: Path, user: SandboxUser) -> Path | None:
    """The first folder on the way to ``path`` that ``user`` may not traverse, if any."""
    path = path.absolute()
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except OSError:
            return folder
        if st.st_uid == user.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def plan_sandbox(
    folders: Sequence[Path],
    euid: int | None = None,
    landlock_abi: Callable[[], int] = landlock.abi_version,
    find_user: Callable[[str], SandboxUser | None] = lookup_user,
) -> Sandbox:
    """The sandbox this worker can give its attempts, whose files live in ``folders``."""
    euid = os.geteuid() if euid is None else euid
    abi = landlock_abi()
    if abi > 0:
        log.info("attempts may write only in their working directory (Landlock ABI {abi})", abi=abi)
    else:
        log.warn(
            "this kernel offers no Landlock: attempts are kept to their working directory only "
            "by file permissions"
        )
    user: SandboxUser | None = None
    if euid == 0:
        user = find_user(SANDBOX_USER)
        blocked = (
            [b for b in (blocking_folder(f, user) for f in folders) if b is not None]
            if user is not None
            else []
        )
        if user is None:
            log.warn(
                "the worker runs as root and there is no user {user}: attempts run as root, "
                "where the kernel does not enforce the process limit",
                user=SANDBOX_USER,
            )
        elif blocked:
            log.warn(
                "the worker runs as root, but {user} cannot reach {folder}: attempts run as "
                "root, where the kernel does not enforce the process limit. Give --data a "
                "folder whose every parent others may traverse (e.g. /var/lib/xwch-worker)",
                user=SANDBOX_USER,
                folder=blocked[0],
            )
            user = None
        else:
            log.info("the worker runs as root: attempts run as {user}", user=user.name)
    return Sandbox(user=user, landlock=abi > 0)
