"""Runs one attempt: a fresh working directory, the inputs, the program, the outputs.

The program runs through :mod:`xwch.worker.launcher` (started afresh, or forked by the worker's
fork server: :mod:`xwch.worker.spawner`), which sets up the attempt's sandbox
(:mod:`xwch.worker.sandbox`): a process group of its own, so that a timeout, a cancel or a
giveback kills everything the attempt started with one ``killpg`` and a suspension stops it all
with one SIGSTOP; resource limits; writes confined to the working directory; the program's bytes
checked against its digest. Its standard output and error are kept as tails of
``LOG_TAIL_BYTES`` each.

Inputs must never let a task change what the next task gets. When the task runs as another
user than the worker (a root worker's ``nobody``), they are hard links to the cache's read-only
objects, read in place: the task may not change the mode of a file it does not own. When it runs
as the worker's own user it could (Landlock governs paths, not ``chmod``), so it gets copies
(reflinks, on file systems that have them). What the attempt uses in the cache is pinned there
until it is discarded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.protocol.objects import OutputFile
from xwch.protocol.wire import INLINE_MOST, LOG_TAIL_BYTES, OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.transfer.digest import sha256_file

from .cache import ObjectCache
from .checkpointer import Checkpointer
from .files import remove_tree
from .launcher import LIMIT_PREFIX, REFUSED_DIGEST
from .program_identity import FileIdentity, VerifiedPrograms
from .releases import FolderReleases, off_reactor
from .sandbox import Sandbox
from .spawner import STATUS_FD, AttemptProcess, AttemptSpawner, DirectSpawner
from .trust import program_refusal
from .workfolders import TMP_DIR, WorkFolders, is_attempt_folder_name

# What every program sees, whatever the worker's own environment holds: the volunteer's variables
# (tokens, paths, names) are none of the task's business, and a task should run the same on every
# worker.
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
BASE_LANG = "C.UTF-8"

INPUT_MODE = 0o444
WORKDIR_MODE = 0o700

ERROR_KILLED = "killed"

__all__ = ["AttemptError", "AttemptExecutor", "CompletedAttempt", "local_path", "remove_tree"]


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


class _TaskProcess(AttemptProcess):
    """Collects a task's output tails; tells the executor when the program exits and ends."""

    def __init__(self, on_exited: Callable[[], None]) -> None:
        self.stdout = _Tail()
        self.stderr = _Tail()
        # What the launcher said on its status pipe: nothing unless it could not start.
        self.status = _Tail(4096)
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
        elif child_fd == STATUS_FD:
            self.status.feed(data)

    def processExited(self, reason: Failure) -> None:
        self._on_exited()

    def processEnded(self, reason: Failure) -> None:
        # Kept aside: a Failure given to callback() would become an error of the Deferred.
        self.reason = reason
        self.ended.callback(None)

    def refusal(self) -> tuple[str, str] | None:
        """(kind, message) of the launcher's refusal to start the program, if it refused."""
        text = self.status.text().strip()
        if not text:
            return None
        try:
            doc = json.loads(text.splitlines()[-1])
            return str(doc["kind"]), str(doc["message"])
        except (ValueError, KeyError, TypeError):
            return "sandbox", text


class AttemptExecutor:
    """Runs one :class:`Assignment` to its end and tells how it went.

    ``run`` never raises for a task's failure: every way an attempt can go wrong (an input that
    cannot be fetched, a crash, a timeout, a missing output) is a failed :class:`AttemptResult`.
    ``kill`` may be called at any time and makes ``run`` return soon; ``suspend`` and ``resume``
    stop and continue its processes (a suspended attempt's timeout does not run).
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
        sandbox: Sandbox | None = None,
        spawner: AttemptSpawner | None = None,
        folders: WorkFolders | None = None,
        releases: FolderReleases | None = None,
        trusted_keys: frozenset[str] = frozenset(),
        checkpoints: Callable[[AttemptExecutor], Checkpointer] | None = None,
        programs: VerifiedPrograms | None = None,
    ) -> None:
        """``trusted_keys``: the keys whose signed programs alone this worker runs (none: any
        program). ``checkpoints``: makes the saver of an assignment that has a checkpoint."""
        self.assignment = assignment
        self._trusted_keys = trusted_keys
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._cache = cache
        # The attempt id becomes a directory name, later removed: it must not name anything
        # else (the parent folder, the spare folders...). A bad id fails here, before anything
        # is touched.
        if not is_attempt_folder_name(assignment.attempt):
            raise AttemptError(f"not an attempt id: {assignment.attempt!r}")
        self.workdir = local_path(work_root, assignment.attempt)
        # Without folders shared by the worker's attempts, none is used again.
        self._folders = folders if folders is not None else WorkFolders(work_root, keep=0)
        # Releasing folders a batch at a time (shared by the worker's attempts), or one by one.
        self._releases = releases
        self._sandbox = sandbox if sandbox is not None else Sandbox()
        self._limits = {**self._sandbox.limits, **(limits or {})}
        self._spawner = spawner if spawner is not None else DirectSpawner(reactor, python)
        self._killed = False
        self._timed_out = False
        self._preparing: Deferred[tuple[Path, str | None]] | None = None
        # The making of the working directory, in a thread: a kill does not stop it.
        self._making: Deferred[None] | None = None
        self._group: int | None = None
        self._exited = False
        self._timer: Deferred[None] | None = None
        # When the timeout fires while it runs; the seconds it has left while suspended.
        self._deadline: float | None = None
        self._remaining: float | None = None
        self._suspended_at: float | None = None
        self._suspended_total = 0.0
        self._gate: Deferred[None] | None = None
        self._pinned: list[str] = []
        # Lines for the task's log from the worker itself (checkpoints restored or not saved),
        # kept until the program's standard error is collected.
        self._notes: list[str] = []
        self._process: _TaskProcess | None = None
        self.checkpoints = (
            checkpoints(self)
            if checkpoints is not None and assignment.checkpoint is not None
            else None
        )
        # Program files the worker hashed itself, whose identity the launcher may trust.
        self._programs = programs
        self._trust: FileIdentity | None = None

    @property
    def process_group(self) -> int | None:
        """The attempt's process group while its program runs."""
        return None if self._exited else self._group

    @property
    def suspended(self) -> bool:
        return self._suspended_at is not None

    async def run(self) -> CompletedAttempt:
        """Prepare, run and collect the attempt; on any failure a failed result, never an error."""
        try:
            self._preparing = Deferred.fromCoroutine(self._prepare())
            program, sha256 = await self._preparing
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
        if self.suspended and not self._killed:
            # Prepared while suspended: the program starts only once resumed.
            self._gate = Deferred()
            await self._gate
        if self._killed:
            return self._failed(ERROR_KILLED)
        return await self._execute(program, sha256)

    def note(self, line: str) -> None:
        """Add a line of the worker's own to the task's log (its standard error)."""
        data = (line + "\n").encode()
        if self._process is not None:
            self._process.stderr.feed(data)
        else:
            self._notes.append(line)

    def save_checkpoint(self) -> Deferred[None]:
        """Stop the program where it is and save its checkpoint (the worker is stopping);
        fires once saved or given up, at once for an attempt that keeps none."""
        if self.checkpoints is None or self._group is None or self._exited or self._killed:
            return succeed(None)
        self.suspend(save=False)
        return self.checkpoints.save()

    def kill(self) -> None:
        """Stop the attempt now: its downloads, or every process it started."""
        self._killed = True
        if self.checkpoints is not None:
            self.checkpoints.stop()
        if self._preparing is not None:
            self._preparing.cancel()
        elif self._gate is not None:
            self._open_gate()
        else:
            self._kill_group()

    def suspend(self, save: bool = True) -> None:
        """Stop every process of the attempt where it is (SIGSTOP), its timeout with it; with
        ``save``, its checkpoint is saved as the program left it."""
        if self.suspended or self._killed:
            return
        now = _now(self._clock)
        self._suspended_at = now
        if self._timer is not None and self._deadline is not None:
            self._timer.cancel()
            self._timer = None
            self._remaining = max(0.0, self._deadline - now)
        self._signal_group(signal.SIGSTOP)
        self.log.info("attempt {attempt} suspended", attempt=self.assignment.attempt)
        if save and self.checkpoints is not None and self._group is not None and not self._exited:
            # Stopped, the program changes nothing while it is read: the best moment.
            self.checkpoints.save()

    def resume(self) -> None:
        """Continue a suspended attempt (SIGCONT) and its timeout."""
        if self._suspended_at is None:
            return
        now = _now(self._clock)
        self._suspended_total += now - self._suspended_at
        self._suspended_at = None
        self._signal_group(signal.SIGCONT)
        if self._remaining is not None:
            self._arm_timer(self._remaining)
            self._remaining = None
        self._open_gate()
        self.log.info("attempt {attempt} resumed", attempt=self.assignment.attempt)

    def discard(self) -> Deferred[None]:
        """Give back the working directory (the outputs are already in the cache or in the
        result); fires once it is emptied or gone."""
        for digest in self._pinned:
            self._cache.unpin(digest)
        self._pinned.clear()
        if self.checkpoints is not None:
            self.checkpoints.stop()
            off_reactor(self._reactor, self.checkpoints.discard).addErrback(
                lambda f: self.log.warn("cannot remove staged checkpoint: {e}", e=f.value)
            )
        making, self._making = self._making, None
        if making is not None and not making.called:
            # Killed while its folder was being made: removed once made, not before.
            removed: Deferred[None] = Deferred()
            making.addBoth(lambda _: self._release().chainDeferred(removed))
            return removed
        return self._release()

    def _release(self) -> Deferred[None]:
        if self._releases is not None:
            return self._releases.release(self.workdir)
        return self._off_reactor(self._folders.release, self.workdir)

    def _off_reactor(self, call: Callable[[Path], None], path: Path) -> Deferred[None]:
        """``call(path)`` in the reactor's thread pool (inline on a reactor without threads).

        Making and removing folders are blocking system calls, milliseconds each where the disk
        is told of every freed block (ext4 mounted with discard), and one on the work folder
        waits for any other there: off the reactor, which meanwhile reports results and starts
        attempts."""
        return off_reactor(self._reactor, call, path)

    # Preparation

    async def _prepare(self) -> tuple[Path, str | None]:
        a = self.assignment
        # Before anything is fetched or made executable: whatever the coordinator believes
        # this worker trusts, a program it does not trust never becomes runnable here.
        refused = program_refusal(a.binary, self._trusted_keys)
        if refused is not None:
            raise AttemptError(f"refused to run: {refused}")
        if self._folders.make_at_once(self.workdir):
            self._making = succeed(None)
        else:
            self._making = self._off_reactor(self._folders.make, self.workdir)
        # A kill cancels the wait, not the making (see discard).
        await _shielded(self._making)
        for digest in [a.binary.digest, *(item.digest for item in a.inputs)]:
            self._pin(digest)
        program, sha256 = await self._program()
        if sha256 is not None and self._programs is not None and self._sandbox.seals_cache:
            self._trust = await self._programs.identity_for(
                program, sha256, functools.partial(off_reactor, self._reactor)
            )
        # One input after the other: an attempt holds one transfer at a time, so the number
        # of the worker's transfers stays bounded by its slots.
        for item in a.inputs:
            destination = local_path(self.workdir, item.path)
            content = a.inline.get(item.digest)
            if content is not None:
                # A small object the coordinator keeps: its bytes came with the assignment.
                source = self._cache.keep_bytes(item.digest, content)
            else:
                source = await self._cache.ensure(
                    item.digest, item.size, a.sources.get(item.digest, ())
                )
            _place(source, destination, link=self._sandbox.user is not None)
        if self.checkpoints is not None:
            # The checkpoint saved by an earlier attempt, or an empty directory.
            await self.checkpoints.restore()
        if self._sandbox.user is not None:
            self._hand_over(self._sandbox.user.uid, self._sandbox.user.gid)
        return program, sha256

    async def _program(self) -> tuple[Path, str | None]:
        """The program to run, and the digest its bytes must have."""
        binary = self.assignment.binary
        sources = self.assignment.sources.get(binary.digest, ())
        if not binary.bundle:
            program = await self._cache.ensure_program(binary.digest, binary.size, sources)
            return program, binary.digest
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
        return entry, self._cache.bundle_file_digest(binary.digest, binary.entry or "")

    def _hand_over(self, uid: int, gid: int) -> None:
        """Give the working directory's folders to the sandbox user; inputs stay read-only."""
        for folder, _dirs, _files in os.walk(self.workdir):
            os.chown(folder, uid, gid)
        os.chmod(self.workdir, WORKDIR_MODE)

    def _pin(self, digest: str) -> None:
        self._cache.pin(digest)
        self._pinned.append(digest)

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

    async def _execute(self, program: Path, sha256: str | None) -> CompletedAttempt:
        a = self.assignment
        process = self._process = _TaskProcess(self._on_exited)
        for line in self._notes:
            process.stderr.feed((line + "\n").encode())
        launcher_argv = [
            *self._sandbox.launcher_options(self.workdir, sha256, self._trust),
            "--status-fd",
            str(STATUS_FD),
            "--",
            str(program),
            *a.args,
        ]
        started = _now(self._clock)
        # Only the time suspended while the program runs is taken off its duration.
        self._suspended_total = 0.0
        try:
            pid = await self._spawner.spawn(
                process, launcher_argv, self._environment(), str(self.workdir)
            )
        except OSError as e:
            return self._failed(f"cannot start the program: {e}")
        # The launcher's setsid makes its pid the id of the attempt's process group.
        self._group = pid
        # Killed or suspended while the launcher was being started (a fork server answers
        # asynchronously): what could not reach it then reaches it now.
        if self._killed:
            self._kill_group()
        elif self.suspended:
            self._signal_group(signal.SIGSTOP)
        # Debug: on tasks of milliseconds a line per start would be most of the log (the
        # result's line says how each attempt went).
        self.log.debug(
            "attempt {attempt} of {job}/{task} started as pid {pid}",
            attempt=a.attempt,
            job=a.job,
            task=a.task,
            pid=self._group,
        )
        if a.timeout is not None:
            self._arm_timer(a.timeout)
        if self.checkpoints is not None:
            self.checkpoints.start()
        await process.ended
        if self.checkpoints is not None:
            # Its end is the task's (or the attempt's): nothing more worth saving.
            self.checkpoints.stop()
        reason = process.reason
        assert reason is not None
        ended = _now(self._clock)
        suspended = self._suspended_total
        if self._suspended_at is not None:
            suspended += ended - self._suspended_at
        duration = ended - started - suspended
        if self._timer is not None:
            self._timer.cancel()
        stdout, stderr = process.stdout.text(), process.stderr.text()
        if self._timed_out:
            return self._failed(
                f"timed out after {a.timeout:g} s", stdout=stdout, stderr=stderr, duration=duration
            )
        if self._killed:
            return self._failed(ERROR_KILLED, stdout=stdout, stderr=stderr, duration=duration)
        refusal = process.refusal()
        if not reason.check(ProcessDone):
            value: Any = reason.value
            assert isinstance(value, ProcessTerminated)
            if refusal is not None:
                kind, error = refusal
                # The job's name for the program, not the path of its copy in the cache (the
                # launcher says the same on the program's standard error).
                if a.binary.name is not None:
                    named = f"binary {a.binary.name!r}"
                    error = error.replace(str(program), named)
                    stderr = stderr.replace(str(program), named)
                if kind == REFUSED_DIGEST:
                    # Whatever changed the bytes, the next attempt must fetch them afresh.
                    self._cache.forget(a.binary.digest, error)
            elif value.signal is not None:
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

    def _arm_timer(self, seconds: float) -> None:
        self._deadline = _now(self._clock) + seconds
        self._timer = deferLater(self._clock, seconds, self._time_out)
        self._timer.addErrback(lambda f: f.trap(CancelledError))

    def _on_exited(self) -> None:
        self._exited = True
        # The program is gone; whatever it left running in the background would otherwise
        # hold its output pipes open (and the attempt with them) and outlive it on the
        # volunteer's machine.
        self._kill_group()

    def _time_out(self) -> None:
        self._timed_out = True
        self._kill_group()

    def _open_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None and not gate.called:
            gate.callback(None)

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        group = self._group
        if group is None or (self._exited and signum != signal.SIGKILL):
            return
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            # No such group: the launcher has not called setsid yet, so it is alone. (Once the
            # program has exited its pid may be reused: never signal it by pid then.)
            if not self._exited:
                try:
                    os.kill(group, signum)
                except ProcessLookupError:
                    pass
        except PermissionError as e:
            self.log.warn("cannot signal process group {group}: {error}", group=group, error=e)

    # Outputs

    def _collect_outputs(self) -> tuple[tuple[OutputFile, ...], dict[str, Path]]:
        paths = [(name, self._checked_output(name)) for name in self.assignment.outputs]
        outputs: list[OutputFile] = []
        files: dict[str, Path] = {}
        for name, path in paths:
            content = _small_content(path)
            if content is not None:
                # Small enough to travel in the result, which the coordinator keeps: read once,
                # the bytes hashed are the bytes sent; the file goes with the working directory.
                digest = hashlib.sha256(content).hexdigest()
                outputs.append(OutputFile(name, digest, len(content), content=content))
                continue
            # Moved out of the working directory before hashing, so the bytes hashed are the
            # bytes kept.
            staged = self._cache.staging_path()
            if os.lstat(path).st_nlink > 1:
                # Another name for the same file (an input, say): moving it and making it the
                # worker's would change that file too.
                _copy_no_follow(path, staged)
            else:
                try:
                    os.replace(path, staged)
                except OSError:
                    _copy_no_follow(path, staged)
            if os.stat(staged).st_uid != os.geteuid():
                # Written by the sandbox user: the cache's files are the worker's alone.
                os.chown(staged, os.geteuid(), os.getegid())
            digest, size = sha256_file(staged)
            self._pin(digest)
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
        if path.parent == self.workdir:
            return path  # no directory on its way: it is in the working directory itself
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


def _place(source: Path, destination: Path, link: bool) -> None:
    """Put a cached object at ``destination``: a hard link if ``link`` and possible, else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass  # another file system, or one without hard links
    shutil.copyfile(source, destination)
    os.chmod(destination, INPUT_MODE)


def _shielded(operation: Deferred[None]) -> Deferred[None]:
    """Fires as ``operation`` does; cancelling it leaves ``operation`` to go on."""
    shield: Deferred[None] = Deferred()

    def forward(result: object) -> None:
        if shield.called:
            return  # cancelled meanwhile: nobody waits
        if isinstance(result, Failure):
            shield.errback(result)
        else:
            shield.callback(None)

    operation.addBoth(forward)
    return shield


def _small_content(path: Path) -> bytes | None:
    """The bytes of the regular file ``path`` when they are few enough to travel inline, else
    None. Neither a link followed nor a wait on a pipe put there in the file's place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > INLINE_MOST:
            return None
        content = os.read(fd, INLINE_MOST + 1)
    finally:
        os.close(fd)
    # Still growing (a process left behind writes to it): not a small output after all.
    return content if len(content) <= INLINE_MOST else None


def _copy_no_follow(source: Path, destination: Path) -> None:
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src, destination.open("xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _now(clock: IReactorTime) -> float:
    return float(clock.seconds())  # type: ignore[misc]  # zope methods lack self for mypy


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
