"""The native launcher: :file:`launch.c`, compiled on first use into the worker's state folder.

The C launcher keeps the Python launcher's contract (:mod:`xwch.worker.launcher`) and starts an
attempt's program for a fraction of the CPU: the worker starts it with ``posix_spawn`` (no page
table to copy, unlike forking the fork server) and it execs the program after a few system calls.
On a worker of two cores running short tasks, that CPU is tasks per second.

A volunteer's machine may have no C compiler: then :func:`build_native_launcher` says why and the
worker falls back to the fork server, which does the same in Python. The binary's name carries
the digest of the source and of the compiler's command, so a new version of either is built
afresh and never mistaken for the old one.

Built with musl (``musl-gcc``, Debian's ``musl-tools``) where it is installed: at every start,
glibc asks the CPU for its caches' sizes with dozens of ``cpuid`` instructions, which a virtual
machine's hypervisor traps one by one; measured on a cloud VM, a glibc launcher took 0.6 ms of
CPU per attempt before the program even started, a musl one 0.07 ms.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .launcher import EXIT_CANNOT_EXECUTE

SOURCE = Path(__file__).resolve().with_name("launch.c")
# Included by launch.c: its spawn server (--serve), part of the same build.
INCLUDED = ("launch_server.h",)
# Static first: no dynamic loader to run on every attempt (a tenth of a millisecond); where the
# C library has no static archive, the dynamic build does the same.
_FLAG_SETS = (["-O2", "-static"], ["-O2"])
# Tried before the system's compiler (see above); static only, its reason to be.
MUSL = "musl-gcc"
_COMPILE_SECONDS = 120
# Set to 0 to start attempts through the fork server even where the launcher builds.
SWITCH = "XWCH_NATIVE_LAUNCHER"


@dataclass(frozen=True)
class NativeBuild:
    """A usable native launcher (``path``), or why there is none (``reason``)."""

    path: Path | None
    reason: str = ""


def default_folder(environ: dict[str, str] | None = None) -> Path:
    """Where the launcher is built: the user's cache, shared by every worker of that user on the
    machine (built once, not once per worker); ``$XDG_CACHE_HOME/xwch`` or ``~/.cache/xwch``."""
    environ = dict(os.environ) if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "xwch"


def native_launcher_for_worker(
    fallback_folder: Path, environ: dict[str, str] | None = None
) -> NativeBuild:
    """The launcher a worker should use: built in :func:`default_folder`, or in
    ``fallback_folder`` (the worker's own data) where the cache cannot be written."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(SWITCH, "1").strip() in ("0", "no", "false", "off"):
        return NativeBuild(None, f"{SWITCH}={environ[SWITCH]}")
    built = build_native_launcher(default_folder(environ), environ=environ)
    if built.path is None:
        built = build_native_launcher(fallback_folder, environ=environ)
    return built


def compiler(environ: dict[str, str] | None = None) -> list[str] | None:
    """The C compiler's command: ``$CC`` where set, else the first of cc, gcc, clang found."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("CC"):
        return shlex.split(environ["CC"])
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return [found]
    return None


def builds(environ: dict[str, str] | None = None) -> list[tuple[list[str], list[str]]]:
    """The (compiler, flags) to try in turn: musl's static build first unless ``$CC`` says
    which compiler, then the system compiler's static and dynamic builds."""
    environ = dict(os.environ) if environ is None else environ
    tries = []
    musl = None if environ.get("CC") else shutil.which(MUSL, path=environ.get("PATH"))
    if musl is not None:
        tries.append(([musl], _FLAG_SETS[0]))
    command = compiler(environ)
    if command is not None:
        tries += [(command, flags) for flags in _FLAG_SETS]
    return tries


def build_native_launcher(
    folder: Path, source: Path = SOURCE, environ: dict[str, str] | None = None
) -> NativeBuild:
    """The launcher compiled from ``source`` into ``folder``, built now unless already there."""
    tries = builds(environ)
    if not tries:
        return NativeBuild(None, "no C compiler (cc, gcc or clang; or $CC) to build it")
    try:
        # What it includes is part of its identity: a change there is a new launcher too.
        code = source.read_bytes() + b"".join(
            included.read_bytes()
            for included in (source.with_name(name) for name in INCLUDED)
            if included.exists()
        )
    except OSError as e:
        return NativeBuild(None, f"cannot read {source}: {e.strerror or e}")
    reasons = []
    for command, flags in tries:
        identity = hashlib.sha256(code + "\0".join([*command, *flags]).encode()).hexdigest()
        target = folder / f"xwch-launch-{identity[:16]}"
        if target.is_file() and os.access(target, os.X_OK):
            return NativeBuild(target)
        reason = _compile(command, flags, source, target)
        if reason is None:
            return NativeBuild(target)
        reasons.append(reason)
    return NativeBuild(None, reasons[-1])


def _compile(command: list[str], flags: list[str], source: Path, target: Path) -> str | None:
    """Compile ``source`` to ``target`` (whole or not at all); None when it worked, else why."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {target.parent}: {e.strerror or e}"
    # A name of our own: two workers sharing the folder never write into each other's file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        done = subprocess.run(
            # Its includes are found beside it, or else beside the worker's own launch.c.
            [*command, *flags, "-I", str(SOURCE.parent), "-o", str(partial), str(source)],
            capture_output=True,
            text=True,
            timeout=_COMPILE_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        partial.unlink(missing_ok=True)
        return f"{shlex.join(command)} failed: {e}"
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        error = (done.stderr or done.stdout).strip().splitlines()
        return f"{shlex.join(command)} {' '.join(flags)} failed: {error[-1] if error else ''}"
    # Built is not runnable (a static binary the system cannot load, say): called without a
    # program, a working launcher refuses with the shell's "cannot execute" status.
    try:
        ran = subprocess.run([str(partial)], capture_output=True, timeout=_COMPILE_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as e:
        ran = None
        why = str(e)
    if ran is None or ran.returncode != EXIT_CANNOT_EXECUTE:
        partial.unlink(missing_ok=True)
        if ran is not None:
            why = f"exit status {ran.returncode}"
        return f"the launcher built with {' '.join(flags)} does not run: {why}"
    os.replace(partial, target)
    return None
