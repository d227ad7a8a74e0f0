"""The shim that starts a task's program: ``python -m xwch.worker.launcher -- PROGRAM ARGS...``.

Twisted's ``spawnProcess`` has no hook to run code in the child before ``exec``, and the executor
needs two things there: a process group of the task's own (so that killing the attempt kills
every process it started) and, optionally, resource limits. This module does both, then replaces
itself with the program (same pid), so the executor sees the program's exit status directly.

It imports nothing but the standard library, and does as little as possible: it runs for every
attempt.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence

# Resource limits come in variables named after the ``resource.RLIMIT_*`` they set, e.g.
# ``XWCH_LIMIT_CPU=60`` or ``XWCH_LIMIT_AS=2147483648``; the value sets both soft and hard limit.
LIMIT_PREFIX = "XWCH_LIMIT_"

# The statuses a shell gives when it cannot run a command, so users read them the usual way.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class LaunchError(Exception):
    """The launcher was called wrongly or cannot apply a limit."""


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


def launch(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Set the child up and exec ``argv`` after ``--``; returns only when that fails."""
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m xwch.worker.launcher -- PROGRAM [ARGS...]", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    program, args = argv[1], list(argv[1:])
    try:
        limits = parse_limits(environ)
        # A session of our own, hence a process group whose id is our pid: the executor kills
        # the whole group with one killpg, children and grandchildren included.
        os.setsid()
        apply_limits(limits)
    except (LaunchError, OSError) as e:
        print(f"xwch-launcher: {e}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    # The limits are for the launcher to apply, not for the program to see.
    env = {k: v for k, v in environ.items() if not k.startswith(LIMIT_PREFIX)}
    # Python ignores SIGPIPE and SIGXFSZ for itself; ignored signals survive exec, and a task
    # writing to a closed pipe should die of it as it would when started from a shell.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execve(program, args, env)
    except FileNotFoundError:
        print(f"xwch-launcher: {program}: not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as e:
        print(f"xwch-launcher: cannot run {program}: {e.strerror or e}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    raise AssertionError("unreachable: execve returns only by raising")


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:], os.environ))
