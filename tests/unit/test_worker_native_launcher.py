"""The native launcher: built on first use, the Python launcher's contract kept, attempts run.

The executor's and the sandbox's tests run again here with every attempt started by a
:class:`NativeSpawner`; the contract tests run the C launcher and the Python one side by side on
the same requests and expect the same statuses and messages.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.trial.unittest import SkipTest

from tests.unit import test_worker_executor as executor_tests
from tests.unit import test_worker_sandbox as sandbox_tests
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker.executor import AttemptExecutor
from xwch.worker.native_launcher import (
    MUSL,
    SOURCE,
    SWITCH,
    build_native_launcher,
    compiler,
    native_launcher_for_worker,
)
from xwch.worker.spawner import NativeSpawner, _clear_of_targets


@functools.cache
def _built() -> Path | None:
    """One build for the whole run, in a folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="xwch-launch-test-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_native_launcher(folder).path


def _launcher() -> Path:
    path = _built()
    if path is None:
        raise SkipTest("no C compiler here to build the native launcher")
    return path


# Building


def test_built_once_and_found_again(tmp_path: Path) -> None:
    first = build_native_launcher(tmp_path)
    if first.path is None:
        pytest.skip(first.reason)
    built_at = first.path.stat().st_mtime_ns
    again = build_native_launcher(tmp_path)
    assert again.path == first.path
    assert first.path.stat().st_mtime_ns == built_at
    # Nothing half-written is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]


def test_a_changed_source_gets_a_launcher_of_its_own(tmp_path: Path) -> None:
    changed = tmp_path / "launch.c"
    changed.write_text(SOURCE.read_text() + "\n/* another version */\n")
    old = build_native_launcher(tmp_path / "bin")
    new = build_native_launcher(tmp_path / "bin", source=changed)
    if old.path is None or new.path is None:
        pytest.skip(old.reason or new.reason)
    assert old.path != new.path


def _fake_musl(folder: Path, works: bool) -> Path:
    """A ``musl-gcc`` on a PATH of its own that leaves a mark when called, then builds with the
    system's compiler (or fails)."""
    system = compiler()
    if system is None:
        pytest.skip("no C compiler here to build the native launcher")
    folder.mkdir()
    mark = folder / "called"
    build = f'exec {shlex.join(system)} "$@"' if works else "echo 'musl: broken' >&2; exit 1"
    fake = folder / MUSL
    fake.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(mark))}\n{build}\n")
    fake.chmod(0o755)
    return mark


def test_musl_is_tried_first(tmp_path: Path) -> None:
    """Where musl-gcc is found it builds the launcher (glibc's start-up is slow in a VM)."""
    mark = _fake_musl(tmp_path / "musl", works=True)
    path = f"{tmp_path / 'musl'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    built = build_native_launcher(tmp_path / "bin", environ={"PATH": path})
    assert built.path is not None, built.reason
    assert mark.exists()


def test_a_broken_musl_falls_back_to_the_system_compiler(tmp_path: Path) -> None:
    mark = _fake_musl(tmp_path / "musl", works=False)
    path = f"{tmp_path / 'musl'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    built = build_native_launcher(tmp_path / "bin", environ={"PATH": path})
    assert mark.exists()
    assert built.path is not None, built.reason


def test_cc_set_means_that_compiler_only(tmp_path: Path) -> None:
    system = compiler()
    if system is None:
        pytest.skip("no C compiler here to build the native launcher")
    mark = _fake_musl(tmp_path / "musl", works=True)
    path = f"{tmp_path / 'musl'}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    built = build_native_launcher(
        tmp_path / "bin", environ={"PATH": path, "CC": shlex.join(system)}
    )
    assert built.path is not None, built.reason
    assert not mark.exists()


def test_no_compiler_says_so(tmp_path: Path) -> None:
    built = build_native_launcher(tmp_path, environ={"PATH": str(tmp_path)})
    assert built.path is None
    assert "no C compiler" in built.reason


def test_a_failing_compiler_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "source.c"
    broken.write_text("this is not C\n")
    built = build_native_launcher(tmp_path / "bin", source=broken)
    if "no C compiler" in built.reason:
        pytest.skip(built.reason)
    assert built.path is None
    assert "failed" in built.reason
    assert list((tmp_path / "bin").iterdir()) == []


def test_the_switch_turns_it_off(tmp_path: Path) -> None:
    built = native_launcher_for_worker(tmp_path, environ={SWITCH: "0", "PATH": os.defpath})
    assert built.path is None
    assert SWITCH in built.reason


def test_an_unwritable_cache_falls_back_to_the_workers_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    environ = {"XDG_CACHE_HOME": str(blocked), "PATH": os.environ.get("PATH", os.defpath)}
    built = native_launcher_for_worker(tmp_path / "data" / "bin", environ=environ)
    if built.path is None:
        pytest.skip(built.reason)
    assert built.path.parent == tmp_path / "data" / "bin"


# The same contract as the Python launcher


def _run(
    launcher: list[str], argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[int, dict[str, str] | None, str]:
    """Exit status, status line and standard output of one launch."""
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run(
            [*launcher, "--status-fd", str(write_end), *argv],
            env=env,
            cwd=cwd,
            pass_fds=(write_end,),
            capture_output=True,
            text=True,
            timeout=60,
        )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end) as status:
            read_end = -1
            line = status.read().strip()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    return done.returncode, json.loads(line) if line else None, done.stdout


def _both(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[object, object]:
    native = _built()
    if native is None:
        pytest.skip("no C compiler here to build the native launcher")
    python = [sys.executable, "-I", "-m", "xwch.worker.launcher"]
    return _run(python, argv, env, cwd), _run([str(native)], argv, env, cwd)


_SHELL = shutil.which("sh") or "/bin/sh"
_BASE_ENV = {"PATH": os.defpath, "LANG": "C"}


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        pytest.param(["--sha256", "0" * 64, "--", _SHELL, "-c", "true"], {}, id="digest"),
        pytest.param(["--", "/no/such/program"], {}, id="not-found"),
        pytest.param(["--", _SHELL, "-c", "exit 3"], {}, id="exit-status"),
        pytest.param(["--", _SHELL, "-c", "true"], {"XWCH_LIMIT_CPU": "soon"}, id="bad-limit"),
        pytest.param(["--", _SHELL, "-c", "true"], {"XWCH_LIMIT_CPU": "-1"}, id="negative"),
        pytest.param(["--", _SHELL, "-c", "true"], {"XWCH_LIMIT_SPEED": "1"}, id="unknown"),
        pytest.param(["--colour", "red", "--", _SHELL], {}, id="unknown-option"),
        pytest.param(["--processes", "many", "--", _SHELL], {}, id="bad-number"),
        pytest.param(["--writable", "--", _SHELL], {}, id="option-without-value"),
        pytest.param(["--"], {}, id="no-program"),
        pytest.param(["--cwd", "/no/such/folder", "--", _SHELL], {}, id="no-such-cwd"),
        pytest.param(
            ["--writable", "/no/such/folder", "--", _SHELL, "-c", "true"], {}, id="no-such-dir"
        ),
        pytest.param(
            ["--", _SHELL, "-c", "ulimit -n; ulimit -t; env | grep -c XWCH_ || true"],
            {"XWCH_LIMIT_NOFILE": "64", "XWCH_LIMIT_CPU": "30"},
            id="limits-applied-and-hidden",
        ),
    ],
)
def test_same_answers_as_the_python_launcher(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    python, native = _both(argv, {**_BASE_ENV, **env}, tmp_path)
    assert native == python


def test_usage_without_a_separator_is_refused_the_same_way(tmp_path: Path) -> None:
    (python_code, python_status, _), (native_code, native_status, _) = _both(
        ["--sha256", "x"], dict(_BASE_ENV), tmp_path
    )
    # Before the options are known good, the status pipe is not theirs to write on.
    assert (native_code, native_status) == (python_code, python_status) == (126, None)


def test_a_good_digest_runs_the_program_in_its_folder(tmp_path: Path) -> None:
    program = tmp_path / "prog.sh"
    program.write_text("#!/bin/sh\npwd\n")
    program.chmod(0o755)
    digest = hashlib.sha256(program.read_bytes()).hexdigest()
    work = tmp_path / "work"
    work.mkdir()
    argv = ["--sha256", digest, "--cwd", str(work), "--", str(program)]
    python, native = _both(argv, dict(_BASE_ENV), tmp_path)
    assert native == python == (0, None, f"{work}\n")


def test_digest_of_every_length_around_a_block(tmp_path: Path) -> None:
    """SHA-256's padding differs with the length modulo 64: check the lengths around it, and
    around the launcher's 64 KiB reads (with the CPU's SHA extensions where it has them, the
    portable code elsewhere: both must agree with hashlib)."""
    native = _launcher()
    for size in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 65_535, 65_537, 200_003):
        data = bytes(range(256)) * (size // 256 + 1)
        program = tmp_path / f"p{size}"
        program.write_bytes(data[:size])
        wrong = "f" * 64
        code, status, _ = _run([str(native)], ["--sha256", wrong, "--", str(program)], {}, tmp_path)
        assert code == 126 and status is not None
        expected = hashlib.sha256(data[:size]).hexdigest()
        assert f"they hash to {expected})" in status["message"], size


# Attempts started through it


class NativeExecutorTests(executor_tests.ExecutorTests):
    def executor(self, assignment: Assignment) -> AttemptExecutor:
        spawner = NativeSpawner(reactor, str(_launcher()))  # type: ignore[arg-type]
        executor = AttemptExecutor(reactor, self.cache, self.work, assignment, spawner=spawner)
        self.addCleanup(executor.kill)
        self.addCleanup(executor.discard)
        return executor

    async def test_exit_status_and_logs_come_back(self) -> None:
        """An attempt's exit status, output and error reach the result."""
        done = await self.run_script('echo "out $1"; echo err >&2; exit 7')
        self.assertEqual((done.result.outcome, done.result.exit_code), (OUTCOME_FAILED, 7))
        self.assertEqual((done.result.stdout, done.result.stderr), ("out first arg\n", "err\n"))
        done = await self.run_script("pwd > here", outputs=["here"], attempt="a2")
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED)

    async def test_the_task_inherits_no_descriptor_and_no_ignored_signal(self) -> None:
        """posix_spawn passes on what the worker has open or ignores; the launcher drops it."""
        leaked_r, leaked_w = os.pipe()
        self.addCleanup(os.close, leaked_r)
        self.addCleanup(os.close, leaked_w)
        os.set_inheritable(leaked_w, True)
        previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        done = await self.run_script(
            "ls -l /proc/$$/fd > fds; grep SigIgn /proc/$$/status > ignored",
            outputs=["fds", "ignored"],
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        fds, ignored = (o.content for o in done.result.outputs)
        assert fds is not None and ignored is not None
        self.assertNotIn(f"pipe:[{os.fstat(leaked_w).st_ino}]", fds.decode())
        mask = int(ignored.decode().split()[1], 16)
        self.assertFalse(mask & (1 << (signal.SIGUSR1 - 1)), ignored)

    async def test_a_launcher_gone_from_its_folder_is_built_again(self) -> None:
        """A volunteer cleaning their cache folder costs one rebuild, not failed attempts."""
        folder = Path(self.mktemp())
        built = build_native_launcher(folder)
        if built.path is None:
            raise SkipTest(built.reason)
        built.path.unlink()
        spawner = NativeSpawner(reactor, str(built.path))  # type: ignore[arg-type]
        executor = AttemptExecutor(
            reactor, self.cache, self.work, self.assignment("echo again"), spawner=spawner
        )
        self.addCleanup(executor.kill)
        self.addCleanup(executor.discard)
        done = await executor.run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        self.assertEqual(done.result.stdout, "again\n")
        self.assertTrue(built.path.exists())


class NativeSandboxTests(sandbox_tests.SandboxTests):
    def executor(self, assignment: Assignment) -> AttemptExecutor:
        spawner = NativeSpawner(reactor, str(_launcher()))  # type: ignore[arg-type]
        executor = AttemptExecutor(
            reactor,
            self.cache,
            self.work,
            assignment,
            sandbox=self.sandbox,
            spawner=spawner,
            folders=self.folders,
        )
        self.addCleanup(executor.discard)
        self.addCleanup(executor.kill)
        return executor


def test_descriptors_above_the_targets_are_passed_as_they_are() -> None:
    """The usual case: no descriptor of the child's 0 to 3 is among the sources, so none is
    duplicated (four fcntl and four close fewer per attempt)."""
    duplicated: list[int] = []

    def dup(fd: int) -> int:
        duplicated.append(fd)
        return 100 + fd

    assert _clear_of_targets([7, 8, 9, 10], dup) == [7, 8, 9, 10]
    assert duplicated == []


def test_a_descriptor_among_the_targets_makes_all_go_from_above() -> None:
    """Source 1 for target 1 would keep close-on-exec; source 2 for target 3 would be
    overwritten by target 2 first: all are duplicated above."""
    assert _clear_of_targets([1, 8, 2, 10], lambda fd: 100 + fd) == [101, 108, 102, 110]


def test_the_real_duplicates_are_above_the_safe_line() -> None:
    """Standard input (descriptor 0) as the source of target 0: duplicated above 15."""
    [high] = _clear_of_targets([0])
    try:
        assert high >= 16
    finally:
        os.close(high)


def test_tasks_of_a_user_are_counted_from_its_own_proc_folders(tmp_path: Path) -> None:
    """The Python launcher's count (the C one does the same): the threads of the processes
    whose folder belongs to the user, read from their status; other folders are not read."""
    from xwch.worker.launcher import tasks_of_user

    uid = os.getuid()
    other = uid + 1

    def process(pid: int, owner: int, real_uid: int, threads: int) -> None:
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "status").write_text(
            f"Name:\tx\nUid:\t{real_uid}\t{real_uid}\nThreads:\t{threads}\n"
        )
        if owner != uid:
            if os.geteuid() != 0:
                pytest.skip("needs root to give a folder to another user")
            os.chown(folder, owner, -1)

    process(10, uid, uid, 3)
    process(11, uid, uid, 1)
    process(12, other, other, 7)
    # Not read: another user's folder (a non-dumpable process, say), whatever its status says.
    process(13, other, uid, 50)
    (tmp_path / "self").mkdir()
    assert tasks_of_user(uid, str(tmp_path)) == 4
    assert tasks_of_user(other, str(tmp_path)) == 7
