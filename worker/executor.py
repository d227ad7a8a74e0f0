"""Runs one attempt: a fresh working directory, the inputs, the program, the outputs.

The program runs through :mod:`xwch.worker.launcher`, which gives it a process group of its own,
so that a timeout, a cancel or a giveback kills everything the attempt started with one
``killpg`` (a program that makes a session of its own escapes it; confining that is the
sandbox's job). Its standard output and error are kept as tails of ``LOG_TAIL_BYTES`` each.

Inputs are hard links to the cache's read-only objects (copies across file systems), so a task
reads them in place and cannot change what the next task gets; a task that wants to modify an
input copies it first.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.protocol import (
    LOG_TAIL_BYTES,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
    Assignment,
    AttemptResult,
    OutputFile,
)
from xwch.transfer.digest import sha256_file

from .cache import ObjectCache
from .launcher import LIMIT_PREFIX

LAUNCHER_MODULE = "xwch.worker.launcher"

# What every program sees, whatever the worker's own environment holds: the volunteer's variables
# (tokens, paths, names) are none of the task's business, and a task should run the same on every
# worker.
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
BASE_LANG = "C.UTF-8"
TMP_DIR = ".tmp"

INPUT_MODE = 0o444

ERROR_KILLED = "killed"


@dataclass(frozen=True)
class CompletedAttempt:
    """How an attempt ended, and where its outputs are kept (by digest) for the upload."""

    result: AttemptResult
    files: Mapping[str, Path]


class AttemptError(Exception):
    """The attempt cannot run as assigned (a name escaping the working directory...)."""


def local_path(root: Path, name: str) -> Path:
    """``root / name`` for a relative file name that stays inside ``root``.

    The coordinator validated the names of the job file, but a worker does not let any message
    make it write outside a working directory.
    """
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in name or "\0" in name:
        raise AttemptError(f"not a file name inside the working directory: {name!r}")
    return root.joinpath(*parts)


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
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        # Trim only past twice the limit: one copy per ``limit`` bytes, not one per write.
        if len(self._buffer) > 2 * self._limit:
            del self._buffer[: -self._limit]

    def text(self) -> str:
        return bytes(self._buffer[-self._limit :]).decode("utf-8", "replace")


class _TaskProcess(ProcessProtocol):
    """Collects a task's output tails; tells the executor when the program exits and ends."""

    def __init__(self, on_exited: Callable[[], None]) -> None:
        self.stdout = _Tail()
        self.stderr = _Tail()
        # Fires with the reason once the program has exited and its pipes are closed.
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._on_exited = on_exited

    def connectionMade(self) -> None:
        # Nothing to say on standard input: a program reading it gets end-of-file, not a hang.
        assert self.transport is not None
        self.transport.closeStdin()  # type: ignore[misc]  # zope methods lack self for mypy

    def childDataReceived(self, child_fd: int, data: bytes) -> None:
        if child_fd == 1:
            self.stdout.feed(data)
        elif child_fd == 2:
            self.stderr.feed(data)

    def processExited(self, reason: Failure) -> None:
        self._on_exited()

    def processEnded(self, reason: Failure) -> None:
        # Kept aside: a Failure given to callback() would become an error of the Deferred.
        self.reason = reason
        self.ended.callback(None)


class AttemptExecutor:
    """Runs one :class:`Assignment` to its end and tells how it went.

    ``run`` never raises for a task's failure: every way an attempt can go wrong (an input that
    cannot be fetched, a crash, a timeout, a missing output) is a failed :class:`AttemptResult`.
    ``kill`` may be called at any time and makes ``run`` return soon.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        cache: ObjectCache,
        work_root: Path,
        assignment: Assignment,
        limits: Mapping[str, int] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.assignment = assignment
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._cache = cache
        # The attempt id becomes a directory name, later removed: it must not name anything
        # else (the parent folder, say). A bad id fails here, before anything is touched.
        if "/" in assignment.attempt:
            raise AttemptError(f"not an attempt id: {assignment.attempt!r}")
        self.workdir = local_path(work_root, assignment.attempt)
        self._limits = dict(limits or {})
        self._python = python
        self._killed = False
        self._timed_out = False
        self._preparing: Deferred[Path] | None = None
        self._group: int | None = None
        self._exited = False
        self._timer: Deferred[None] | None = None

    async def run(self) -> CompletedAttempt:
        """Prepare, run and collect the attempt; on any failure a failed result, never an error."""
        try:
            self._preparing = Deferred.fromCoroutine(self._prepare())
            program = await self._preparing
        except CancelledError:
            return self._failed(ERROR_KILLED)
        except Exception as e:
            self.log.warn(
                "attempt {attempt} cannot start: {error}",
                attempt=self.assignment.attempt,
                error=e,
            )
            return self._failed(f"cannot prepare the attempt: {e}")
        finally:
            self._preparing = None
        if self._killed:
            return self._failed(ERROR_KILLED)
        return await self._execute(program)

    def kill(self) -> None:
        """Stop the attempt now: its downloads, or every process it started."""
        self._killed = True
        if self._preparing is not None:
            self._preparing.cancel()
        else:
            self._kill_group()

    def discard(self) -> None:
        """Remove the working directory (the outputs are already in the cache)."""
        remove_tree(self.workdir)

    # Preparation

    async def _prepare(self) -> Path:
        a = self.assignment
        remove_tree(self.workdir)
        (self.workdir / TMP_DIR).mkdir(parents=True)
        program = await self._program()
        # One input after the other: an attempt holds one transfer at a time, so the number
        # of the worker's transfers stays bounded by its slots.
        for item in a.inputs:
            destination = local_path(self.workdir, item.path)
            source = await self._cache.ensure(
                item.digest, item.size, a.sources.get(item.digest, ())
            )
            _place(source, destination)
        return program

    async def _program(self) -> Path:
        binary = self.assignment.binary
        sources = self.assignment.sources.get(binary.digest, ())
        if not binary.bundle:
            return await self._cache.ensure_program(binary.digest, binary.size, sources)
        directory = await self._cache.ensure_bundle(binary.digest, binary.size, sources)
        entry = local_path(directory, binary.entry or "")
        try:
            mode = os.lstat(entry).st_mode
        except FileNotFoundError:
            raise AttemptError(f"the bundle has no entry {binary.entry!r}") from None
        if not stat.S_ISREG(mode):
            raise AttemptError(f"the bundle's entry {binary.entry!r} is not a regular file")
        if mode & 0o111 != 0o111:
            # Archives made on some systems lose the executable bit; the entry is meant to run.
            os.chmod(entry, stat.S_IMODE(mode) | 0o555)
        return entry

    # Execution

    def _environment(self) -> dict[str, str]:
        a = self.assignment
        env = {
            "PATH": BASE_PATH,
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir / TMP_DIR),
            "LANG": BASE_LANG,
        }
        # A task does not choose its own resource limits.
        env.update({k: v for k, v in a.env.items() if not k.startswith(LIMIT_PREFIX)})
        env.update(
            {
                "XWCH_JOB": a.job,
                "XWCH_TASK": a.task,
                "XWCH_ATTEMPT": str(a.number),
                "XWCH_ATTEMPT_ID": a.attempt,
            }
        )
        env.update({f"{LIMIT_PREFIX}{name}": str(v) for name, v in self._limits.items()})
        return env

    async def _execute(self, program: Path) -> CompletedAttempt:
        a = self.assignment
        process = _TaskProcess(self._on_exited)
        # -I: the launcher must not be steered by the task's PYTHON* variables.
        argv = [self._python, "-I", "-m", LAUNCHER_MODULE, "--", str(program), *a.args]
        started = _now(self._clock)
        try:
            transport: IProcessTransport = self._reactor.spawnProcess(  # type: ignore[misc]
                process,  # type: ignore[arg-type]
                self._python,
                argv,  # type: ignore[arg-type]
                env=self._environment(),
                path=str(self.workdir),
            )
        except OSError as e:
            return self._failed(f"cannot start the program: {e}")
        # The launcher's setsid makes its pid the id of the attempt's process group.
        self._group = transport.pid
        self.log.info(
            "attempt {attempt} of {job}/{task} started as pid {pid}",
            attempt=a.attempt,
            job=a.job,
            task=a.task,
            pid=self._group,
        )
        if a.timeout is not None:
            self._timer = deferLater(self._clock, a.timeout, self._time_out)
            self._timer.addErrback(lambda f: f.trap(CancelledError))
        await process.ended
        reason = process.reason
        assert reason is not None
        duration = _now(self._clock) - started
        if self._timer is not None:
            self._timer.cancel()
        stdout, stderr = process.stdout.text(), process.stderr.text()
        if self._timed_out:
            return self._failed(
                f"timed out after {a.timeout:g} s", stdout=stdout, stderr=stderr, duration=duration
            )
        if self._killed:
            return self._failed(ERROR_KILLED, stdout=stdout, stderr=stderr, duration=duration)
        if not reason.check(ProcessDone):
            value: Any = reason.value
            assert isinstance(value, ProcessTerminated)
            if value.signal is not None:
                error = f"killed by signal {_signal_name(value.signal)}"
            else:
                error = f"exited with status {value.exitCode}"
            return self._failed(
                error, exit_code=value.exitCode, stdout=stdout, stderr=stderr, duration=duration
            )
        try:
            outputs, files = self._collect_outputs()
        except (AttemptError, OSError) as e:
            return self._failed(
                str(e), exit_code=0, stdout=stdout, stderr=stderr, duration=duration
            )
        result = AttemptResult(
            attempt=a.attempt,
            outcome=OUTCOME_SUCCEEDED,
            exit_code=0,
            outputs=outputs,
            stdout=stdout,
            stderr=stderr,
            duration=duration,
        )
        return CompletedAttempt(result, files)

    def _on_exited(self) -> None:
        self._exited = True
        # The program is gone; whatever it left running in the background would otherwise
        # hold its output pipes open (and the attempt with them) and outlive it on the
        # volunteer's machine.
        self._kill_group()

    def _time_out(self) -> None:
        self._timed_out = True
        self._kill_group()

    def _kill_group(self) -> None:
        group = self._group
        if group is None:
            return
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            # No such group: the launcher has not called setsid yet, so it is alone. (Once the
            # program has exited its pid may be reused: never signal it by pid then.)
            if not self._exited:
                try:
                    os.kill(group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except PermissionError as e:
            self.log.warn("cannot kill process group {group}: {error}", group=group, error=e)

    # Outputs

    def _collect_outputs(self) -> tuple[tuple[OutputFile, ...], dict[str, Path]]:
        paths = [(name, self._checked_output(name)) for name in self.assignment.outputs]
        outputs: list[OutputFile] = []
        files: dict[str, Path] = {}
        for name, path in paths:
            # Moved out of the working directory before hashing, so the bytes hashed are the
            # bytes kept (the working directory is removed anyway).
            staged = self._cache.staging_path()
            try:
                os.replace(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
            digest, size = sha256_file(staged)
            files[digest] = self._cache.adopt(staged, digest)
            outputs.append(OutputFile(name=name, digest=digest, size=size))
        return tuple(outputs), files

    def _checked_output(self, name: str) -> Path:
        path = local_path(self.workdir, name)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise AttemptError(f"missing output: {name}") from None
        if stat.S_ISLNK(mode):
            raise AttemptError(f"output is a symbolic link: {name}")
        if not stat.S_ISREG(mode):
            raise AttemptError(f"output is not a regular file: {name}")
        # The file is no link, but a directory on its way could be one leading elsewhere.
        root = os.path.realpath(self.workdir)
        if os.path.commonpath([root, os.path.realpath(path.parent)]) != root:
            raise AttemptError(f"output is outside the working directory: {name}")
        return path

    def _failed(
        self,
        error: str,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        duration: float = 0.0,
    ) -> CompletedAttempt:
        result = AttemptResult(
            attempt=self.assignment.attempt,
            outcome=OUTCOME_FAILED,
            exit_code=exit_code,
            error=error,
            stdout=stdout,
            stderr=stderr,
            duration=duration,
        )
        return CompletedAttempt(result, {})


def _place(source: Path, destination: Path) -> None:
    """Put a cached object at ``destination``: a hard link when possible, else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        # Another file system, or one without hard links.
        shutil.copyfile(source, destination)
        os.chmod(destination, INPUT_MODE)


def _now(clock: IReactorTime) -> float:
    return float(clock.seconds())  # type: ignore[misc]  # zope methods lack self for mypy


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
