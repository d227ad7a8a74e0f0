"""The shim that starts a task's program: ``python -m xwch.worker.launcher [OPTIONS] -- PROGRAM ARGS``.

Twisted's ``spawnProcess`` has no hook to run code in the child before ``exec``, and the executor
needs the attempt's sandbox set up there. In this order, the launcher:

1. makes a session of its own, hence a process group whose id is its pid, so that killing,
   stopping or continuing the attempt reaches every process it started with one ``killpg``;
2. checks that the program's bytes hash to the digest they were sent under (``--sha256``), so a
   program changed on disk since it was verified never runs; with ``--known-identity
   DEVICE:INODE:CTIME_NS:SIZE`` (the file's identity when the worker itself hashed it:
   :mod:`xwch.worker.program_identity`) it skips the hash if the file still has that identity,
   is a regular file of the launcher's user and writable by nobody;
3. sets resource limits: those of the ``XWCH_LIMIT_<RLIMIT>`` variables, and with
   ``--processes N`` a process limit N above what the attempt's user already runs (the kernel
   counts every process of a user against ``RLIMIT_NPROC``, and ignores it for root);
4. with ``--writable DIR``, gives up writing anywhere but beneath DIR (Landlock), and any
   privilege gain on ``exec`` (no_new_privs);
5. with ``--user UID:GID``, becomes that user (a worker running as root runs tasks as nobody);

then replaces itself with the program (same pid), so the executor sees the program's exit status.
With ``--cwd DIR`` it first enters DIR (the native launcher, :file:`launch.c`, which keeps this
contract in C, is started by ``posix_spawn``, which cannot change directory portably).
When a step fails, the launcher writes why, as one JSON line, on ``--status-fd`` (a pipe the
executor reads; closed on exec, so silence means the program started) and exits 126.

It imports nothing but the standard library and does as little as possible: it runs for every
attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .program_identity import FileIdentity, holds, parse_identity

# Resource limits come in variables named after the ``resource.RLIMIT_*`` they set, e.g.
# ``XWCH_LIMIT_CPU=60`` or ``XWCH_LIMIT_AS=2147483648``; the value sets both soft and hard limit.
LIMIT_PREFIX = "XWCH_LIMIT_"

# The statuses a shell gives when it cannot run a command, so users read them the usual way.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

# What the status line says went wrong ("kind" field).
REFUSED_DIGEST = "digest"
REFUSED_SANDBOX = "sandbox"
REFUSED_EXEC = "exec"

_BLOCK = 1 << 20


class LaunchError(Exception):
    """The launcher was called wrongly or cannot set the sandbox up."""

    def __init__(self, message: str, kind: str = REFUSED_SANDBOX) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Options:
    program: str
    args: list[str]
    sha256: str | None = None
    user: tuple[int, int] | None = None
    writable: str | None = None
    processes: int | None = None
    status_fd: int | None = None
    cwd: str | None = None
    trust: FileIdentity | None = None


def parse_options(argv: Sequence[str]) -> Options:
    """``[--sha256 HEX] [--known-identity DEV:INO:CTIME_NS:SIZE] [--user UID:GID]
    [--writable DIR] [--processes N] [--status-fd FD] [--cwd DIR] -- PROGRAM [ARGS...]``."""
    argv = list(argv)
    if "--" not in argv:
        raise LaunchError("usage: python -m xwch.worker.launcher [OPTIONS] -- PROGRAM [ARGS...]")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    if not command:
        raise LaunchError("no program to run")
    parsed = Options(program=command[0], args=command)
    if len(options) % 2:
        raise LaunchError(f"option without a value: {options[-1]}")
    for name, value in zip(options[::2], options[1::2], strict=True):
        try:
            if name == "--sha256":
                parsed.sha256 = value
            elif name == "--user":
                uid, gid = value.split(":")
                parsed.user = (int(uid), int(gid))
            elif name == "--writable":
                parsed.writable = value
            elif name == "--processes":
                parsed.processes = int(value)
            elif name == "--status-fd":
                parsed.status_fd = int(value)
            elif name == "--cwd":
                parsed.cwd = value
            elif name == "--known-identity":
                parsed.trust = parse_identity(value)
            else:
                raise LaunchError(f"unknown option {name}")
        except ValueError:
            raise LaunchError(f"bad value for {name}: {value!r}") from None
    return parsed


def parse_limits(environ: Mapping[str, str]) -> dict[str, int]:
    """The limits requested in ``environ``, by ``RLIMIT_`` name (``{"CPU": 60}``)."""
    limits: dict[str, int] = {}
    for key, value in environ.items():
        if not key.startswith(LIMIT_PREFIX):
            continue
        name = key[len(LIMIT_PREFIX) :]
        try:
            limits[name] = int(value)
        except ValueError:
            raise LaunchError(f"{key} must be an integer, not {value!r}") from None
        if limits[name] < 0:
            raise LaunchError(f"{key} must not be negative")
    return limits


def apply_limits(limits: Mapping[str, int]) -> None:
    import resource

    for name, value in limits.items():
        which = getattr(resource, f"RLIMIT_{name}", None)
        if not isinstance(which, int):
            raise LaunchError(f"unknown resource limit {LIMIT_PREFIX}{name}")
        _soft, hard = resource.getrlimit(which)
        # An unprivileged process may lower its hard limit, never raise it.
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify_program(path: str, expected: str) -> None:
    """Refuse a program whose bytes do not hash to ``expected``."""
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise LaunchError(f"cannot read the program {path}: {e.strerror or e}", REFUSED_EXEC) from e
    if actual != expected:
        raise LaunchError(
            f"the program's bytes do not match its digest {expected} (they hash to {actual}); "
            "refusing to run it",
            REFUSED_DIGEST,
        )


def tasks_of_user(uid: int, proc: str = "/proc") -> int | None:
    """How many tasks (processes and threads, as RLIMIT_NPROC counts them) ``uid`` runs.

    None where there is no ``/proc`` to count them. Only the status of a process whose folder
    belongs to ``uid`` (its effective user) is read: see ``tasks_of_user`` in launch.c for why,
    and for what that misses.
    """
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    count = 0
    for entry in entries:
        if not entry.isdigit():
            continue
        real_uid = threads = None
        try:
            if os.stat(f"{proc}/{entry}").st_uid != uid:
                continue
            with open(f"{proc}/{entry}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        real_uid = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        if real_uid == uid:
            count += threads or 1
    return count


def process_limit(
    options: Options, count: Callable[[int], int | None] = tasks_of_user
) -> int | None:
    """The ``RLIMIT_NPROC`` that lets the attempt start ``--processes`` more tasks; None: none.

    Never for root: the kernel does not hold root to ``RLIMIT_NPROC``, and counting its tasks
    reads every ``/proc/*/status`` (milliseconds on each attempt, for a limit nobody enforces).
    """
    if options.processes is None:
        return None
    uid = options.user[0] if options.user is not None else os.getuid()
    if uid == 0:
        return None
    running = count(uid)
    return None if running is None else running + options.processes


def set_up(options: Options, environ: Mapping[str, str]) -> None:
    """Everything between the launcher's start and the exec (see the module's docstring)."""
    if options.cwd is not None:
        try:
            os.chdir(options.cwd)
        except OSError as e:
            raise LaunchError(
                f"cannot enter the working directory {options.cwd}: {e.strerror or e}"
            ) from None
    limits = parse_limits(environ)
    # A session of our own: the executor kills, stops and continues the whole group at once.
    os.setsid()
    if options.sha256 is not None and not (
        options.trust is not None and holds(options.program, options.trust, os.geteuid())
    ):
        verify_program(options.program, options.sha256)
    nproc = process_limit(options)
    if nproc is not None:
        limits["NPROC"] = nproc
    apply_limits(limits)
    if options.writable is not None:
        from .landlock import LandlockError, restrict_writes

        try:
            restrict_writes([options.writable])
        except LandlockError as e:
            raise LaunchError(f"cannot confine writes to the working directory: {e}") from None
    if options.user is not None:
        uid, gid = options.user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def _report(status_fd: int | None, error: LaunchError) -> None:
    print(f"xwch-launcher: {error}", file=sys.stderr, flush=True)
    if status_fd is None:
        return
    line = json.dumps({"kind": error.kind, "message": str(error)}) + "\n"
    try:
        os.write(status_fd, line.encode())
    except OSError:
        pass


def launch(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Set the child up and exec the program after ``--``; returns only when that fails."""
    status_fd: int | None = None
    try:
        options = parse_options(argv)
        status_fd = options.status_fd
        if status_fd is not None:
            # Closed by a successful exec: the executor hears nothing unless something failed.
            os.set_inheritable(status_fd, False)
        set_up(options, environ)
    except LaunchError as e:
        _report(status_fd, e)
        return EXIT_CANNOT_EXECUTE
    except OSError as e:
        _report(status_fd, LaunchError(f"cannot set the attempt up: {e}"))
        return EXIT_CANNOT_EXECUTE
    # The limits are for the launcher to apply, not for the program to see.
    env = {k: v for k, v in environ.items() if not k.startswith(LIMIT_PREFIX)}
    # Python ignores SIGPIPE and SIGXFSZ for itself; ignored signals survive exec, and a task
    # writing to a closed pipe should die of it as it would when started from a shell.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execve(options.program, options.args, env)
    except FileNotFoundError:
        _report(status_fd, LaunchError(f"{options.program}: not found", REFUSED_EXEC))
        return EXIT_NOT_FOUND
    except OSError as e:
        _report(
            status_fd,
            LaunchError(f"cannot run {options.program}: {e.strerror or e}", REFUSED_EXEC),
        )
        return EXIT_CANNOT_EXECUTE
    raise AssertionError("unreachable: execve returns only by raising")


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:], os.environ))
