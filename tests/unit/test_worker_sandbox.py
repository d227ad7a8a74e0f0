"""The attempt sandbox, with real processes: escapes tried and refused, suspend and resume.

A worker running as root runs its tasks as ``nobody``; these tests do what such a worker does
(where the tests run as root, as in CI containers) so that the kernel really enforces the
process limit. Their folders live under a fresh folder of ``/tmp`` that ``nobody`` may reach.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import psutil
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from tests.unit.test_worker_executor import SOURCE, FakeWarehouse, wait_until
from xwch.protocol.objects import BinaryRef, InputFile, OutputFile
from xwch.protocol.wire import INLINE_MOST, OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker import landlock
from xwch.worker.cache import ObjectCache
from xwch.worker.executor import AttemptExecutor, CompletedAttempt
from xwch.worker.files import remove_tree
from xwch.worker.launcher import Options, process_limit
from xwch.worker.program_identity import VerifiedPrograms
from xwch.worker.sandbox import (
    SANDBOX_USER,
    Sandbox,
    SandboxUser,
    blocking_folder,
    lookup_user,
    plan_sandbox,
)
from xwch.worker.spawner import AttemptSpawner
from xwch.worker.workfolders import SPARE, TMP_DIR, WorkFolders

PROCESS_LIMIT = 16
FILE_LIMIT = 1_000_000


def _group_states(group: int) -> list[str]:
    states = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                states.append(process.status())
        except (OSError, psutil.Error):
            continue
    return states


def _all_stopped(group: int) -> bool:
    """Every process of ``group`` stopped (a child that ended meanwhile waits as a zombie for
    its stopped parent; a shell caught in vfork waits, uninterruptibly, for its child stopped
    before its exec: dash runs commands by vfork)."""
    states = set(_group_states(group))
    return psutil.STATUS_STOPPED in states and states <= {
        psutil.STATUS_STOPPED,
        psutil.STATUS_ZOMBIE,
        psutil.STATUS_DISK_SLEEP,
    }


def _processes_of(uid: int) -> int:
    """How many processes (zombies included) run as ``uid`` now."""
    count = 0
    for process in psutil.process_iter():
        try:
            count += process.uids().real == uid
        except psutil.Error:
            pass
    return count


class SandboxTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="xwch-sandbox-", dir="/tmp"))
        self.root.chmod(0o755)
        self.addCleanup(remove_tree, self.root)
        self.warehouse = FakeWarehouse()
        self.cache = ObjectCache(self.root / "cache", self.warehouse.fetch)
        self.work = self.root / "work"
        # Folders shared by the attempts of a test, for those about their use again.
        self.folders: WorkFolders | None = None
        self.work.mkdir()
        self.user: SandboxUser | None = None
        if os.geteuid() == 0:
            self.user = lookup_user(SANDBOX_USER)
            if self.user is None or blocking_folder(self.root, self.user) is not None:
                raise SkipTest(f"running as root without a usable {SANDBOX_USER} user")
        self.landlock = landlock.abi_version() > 0
        self.sandbox = Sandbox(
            user=self.user,
            landlock=self.landlock,
            limits={"FSIZE": FILE_LIMIT, "CPU": 60},
            processes=PROCESS_LIMIT,
        )

    def assignment(
        self,
        script: str,
        outputs: Sequence[str] = (),
        inputs: dict[str, bytes] | None = None,
        env: dict[str, str] | None = None,
        attempt: str = "a1",
    ) -> Assignment:
        digest, size = self.warehouse.put(f"#!/bin/sh\n{script}\n".encode())
        files = []
        for path, data in (inputs or {}).items():
            d, s = self.warehouse.put(data)
            files.append(InputFile(path=path, digest=d, size=s))
        return Assignment(
            attempt=attempt,
            job="j1",
            task="t1",
            number=1,
            binary=BinaryRef(digest=digest, size=size),
            args=(),
            env=env or {},
            inputs=tuple(files),
            outputs=tuple(outputs),
            timeout=None,
            sources={d: (SOURCE,) for d in self.warehouse.objects},
        )

    def output_bytes(self, output: OutputFile) -> bytes:
        """An output's bytes: in the result if small, else in the cache."""
        if output.content is not None:
            return output.content
        return self.cache.path_for(output.digest).read_bytes()

    # What starts the attempts' launchers (None: the executor's default), and the verified
    # programs it trusts: subclasses run every test here again through another.
    spawner: AttemptSpawner | None = None
    programs: VerifiedPrograms | None = None

    def executor(self, assignment: Assignment) -> AttemptExecutor:
        executor = AttemptExecutor(
            reactor,
            self.cache,
            self.work,
            assignment,
            sandbox=self.sandbox,
            folders=self.folders,
            spawner=self.spawner,
            programs=self.programs,
        )
        # Whatever a test does, no process of it outlives it.
        self.addCleanup(executor.discard)
        self.addCleanup(executor.kill)
        return executor

    async def run_script(self, script: str, **kwargs: object) -> CompletedAttempt:
        return await self.executor(self.assignment(script, **kwargs)).run()  # type: ignore[arg-type]

    def require_landlock(self) -> None:
        if not self.landlock:
            raise SkipTest("this kernel offers no Landlock")

    # Suspend and resume

    async def test_suspended_task_stops_and_resumes_where_it_was(self) -> None:
        """A suspended attempt's processes all stop; resumed, it carries on and succeeds."""
        executor = self.executor(
            self.assignment(
                "sleep 30 & echo $! > bg.pid\n"
                "echo up > started\n"
                "while [ ! -e go ]; do sleep 0.05; done\n"
                'kill "$(cat bg.pid)"\n'
                "echo finished > out.txt",
                outputs=["out.txt"],
            )
        )
        running = Deferred.fromCoroutine(executor.run())
        await wait_until(lambda: (executor.workdir / "started").exists(), "the task to start")
        group = executor.process_group
        assert group is not None
        executor.suspend()
        await wait_until(lambda: _all_stopped(group), "every process to stop")
        # Told to go on while stopped: it cannot notice.
        (executor.workdir / "go").touch()
        self.assertFalse(running.called)
        self.assertTrue(_all_stopped(group))
        executor.resume()
        done = await running
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        self.assertEqual(self.output_bytes(output).decode(), "finished\n")

    async def test_attempt_suspended_before_its_program_starts_waits(self) -> None:
        """An attempt suspended while preparing starts its program only once resumed."""
        self.warehouse.hold = Deferred()
        executor = self.executor(self.assignment("echo ran > out.txt", outputs=["out.txt"]))
        running = Deferred.fromCoroutine(executor.run())
        executor.suspend()
        self.warehouse.hold.callback(None)
        await wait_until(lambda: (executor.workdir / ".tmp").exists(), "the preparation")
        self.assertIsNone(executor.process_group)
        self.assertFalse(running.called)
        executor.resume()
        done = await running
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)

    async def test_time_suspended_does_not_count_against_the_timeout(self) -> None:
        """A task's timeout stops running while it is suspended, and its duration too."""
        clock = ClockWithRealProcesses()
        assignment = msgspec.structs.replace(
            self.assignment("echo up > started; exec sleep 30"), timeout=10.0
        )
        executor = AttemptExecutor(clock, self.cache, self.work, assignment, sandbox=self.sandbox)
        self.addCleanup(executor.discard)
        self.addCleanup(executor.kill)
        running = Deferred.fromCoroutine(executor.run())
        await wait_until(lambda: (executor.workdir / "started").exists(), "the task to start")
        clock.advance(4.0)
        executor.suspend()
        clock.advance(100.0)
        self.assertFalse(running.called)
        executor.resume()
        clock.advance(5.9)
        self.assertFalse(running.called)
        clock.advance(0.1)
        done = await running
        self.assertEqual(done.result.error, "timed out after 10 s")
        self.assertAlmostEqual(done.result.duration, 10.0)

    # Escapes tried and refused

    async def test_task_runs_as_an_unprivileged_user_when_the_worker_is_root(self) -> None:
        """A worker running as root runs its tasks as nobody, never as root."""
        if self.user is None:
            raise SkipTest("the worker is not root here: tasks run as the worker's user")
        # Too big to travel in the result: the output is kept in the cache.
        done = await self.run_script(
            f"id -u > uid.txt; head -c {INLINE_MOST} /dev/zero >> uid.txt", outputs=["uid.txt"]
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        uid = self.output_bytes(output).rstrip(b"\0").decode()
        self.assertEqual(uid, f"{self.user.uid}\n")
        # Its output is the worker's now, read-only, like everything in the cache.
        self.assertEqual(self.cache.path_for(output.digest).stat().st_uid, os.geteuid())

    async def test_a_folder_the_sandbox_user_had_is_the_workers_again_before_reuse(
        self,
    ) -> None:
        """The folder of a task run as nobody is emptied and given back to the worker before
        another attempt gets it; that one sees nothing of the first."""
        if self.user is None:
            raise SkipTest("the worker is not root here: tasks run as the worker's user")
        folders = self.folders = WorkFolders(self.work)
        first = self.executor(
            self.assignment('mkdir d; echo left > d/left.txt; echo t > "$TMPDIR/t"')
        )
        self.assertEqual((await first.run()).result.outcome, OUTCOME_SUCCEEDED)
        await first.discard()
        self.assertEqual(folders.spares, 1)
        [spare] = (self.work / SPARE).iterdir()
        self.assertEqual(spare.stat().st_uid, os.geteuid())
        second = self.executor(
            msgspec.structs.replace(
                self.assignment('ls -A . "$TMPDIR" > seen.txt', outputs=["seen.txt"]),
                attempt="a2",
            )
        )
        done = await second.run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        self.assertEqual(
            self.output_bytes(output).split(),
            [b".:", b".tmp", b"seen.txt", f"{second.workdir / TMP_DIR}:".encode()],
        )

    async def test_fork_bomb_stops_at_the_process_limit(self) -> None:
        """A task starting processes without end is stopped by the kernel at the limit."""
        executor = self.executor(
            self.assignment(
                # Bounded at 500 only so that a broken limit cannot hurt the test machine.
                "i=0\nwhile [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); echo $i > count.txt; done"
            )
        )
        # The limit counts every process of the task's user: those left by earlier tests (a
        # killed attempt's children, zombies until reaped) take room, and give it back as
        # they go, maybe during the loop.
        others = _processes_of(os.geteuid() if self.user is None else self.user.uid)
        done = await executor.run()
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertIn("fork", done.result.stderr.lower())
        started = int((executor.workdir / "count.txt").read_text())
        self.assertLess(started, PROCESS_LIMIT + others)

    async def test_oversized_file_is_cut_at_the_file_size_limit(self) -> None:
        """A task writing a file past the size limit is killed by SIGXFSZ; the file stops there."""
        executor = self.executor(
            self.assignment(f"exec head -c {FILE_LIMIT * 2} /dev/zero > big", outputs=["big"])
        )
        done = await executor.run()
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual(done.result.error, "killed by signal SIGXFSZ")
        self.assertEqual((executor.workdir / "big").stat().st_size, FILE_LIMIT)

    async def test_writing_outside_the_working_directory_is_refused(self) -> None:
        """A task can write in its folder, its TMPDIR and /dev/null, and nowhere else."""
        self.require_landlock()
        outside = self.root / "open-to-all"
        outside.mkdir()
        # Open to everyone: only the sandbox stands in the way.
        outside.chmod(0o777)
        done = await self.run_script(
            f'echo x > "$TMPDIR/t" && echo x > /dev/null && echo x > mine.txt || exit 1\n'
            f"if touch {outside}/escaped; then exit 2; fi\n"
            f"if ln mine.txt {outside}/linked; then exit 3; fi\n"
            "echo refused > out.txt",
            outputs=["out.txt"],
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.stderr)
        self.assertEqual(list(outside.iterdir()), [])

    async def test_task_cannot_signal_the_worker(self) -> None:
        """A task cannot stop or kill the worker that runs it."""
        if landlock.abi_version() < 6 and self.user is None:
            raise SkipTest("neither Landlock's signal scope nor another user protects here")
        done = await self.run_script(
            f"if kill -CONT {os.getpid()}; then exit 1; fi", env={"COLOR": "blue"}
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.stderr)

    async def test_symlink_output_to_etc_passwd_is_refused(self) -> None:
        """An output that is a link to /etc/passwd fails the attempt; nothing is collected."""
        done = await self.run_script("ln -s /etc/passwd out.txt", outputs=["out.txt"])
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual(done.result.error, "output is a symbolic link: out.txt")
        self.assertEqual(done.files, {})

    async def test_output_linked_to_an_input_leaves_the_input_alone(self) -> None:
        """An output that is another name of an input leaves the cached input as it was."""
        # As nobody the kernel may refuse the link already (protected_hardlinks).
        done = await self.run_script(
            "ln data.txt out.txt || cp data.txt out.txt",
            inputs={"data.txt": b"shared\n"},
            outputs=["out.txt"],
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        cached = self.cache.path_for(output.digest)
        self.assertEqual(cached.read_bytes(), b"shared\n")
        st = cached.stat()
        self.assertEqual((st.st_mode & 0o777, st.st_uid), (0o444, os.geteuid()))

    async def test_inputs_cannot_be_changed_for_the_next_task(self) -> None:
        """Overwriting an input, even after a chmod, leaves the cached object as it was."""
        done = await self.run_script(
            # As nobody both steps are refused; as the worker's user they work, on a copy.
            "chmod u+w data.txt; echo evil > data.txt; true",
            inputs={"data.txt": b"good\n"},
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        digest = hashlib.sha256(b"good\n").hexdigest()
        self.assertEqual(self.cache.path_for(digest).read_bytes(), b"good\n")

    async def test_program_whose_bytes_do_not_match_its_digest_is_refused(self) -> None:
        """A cached program changed on disk is refused before it runs, and fetched afresh."""
        assignment = self.assignment("echo genuine")
        first = await self.executor(assignment).run()
        self.assertEqual(first.result.stdout, "genuine\n")
        program = self.cache.program_path(assignment.binary.digest)
        program.chmod(0o755)
        program.write_text("#!/bin/sh\necho evil\n")
        program.chmod(0o555)
        second = await self.executor(assignment).run()
        self.assertEqual(second.result.outcome, OUTCOME_FAILED)
        self.assertIn("do not match its digest", second.result.error or "")
        self.assertNotIn("evil", second.result.stdout)
        self.assertFalse(program.exists())
        fetched = len(self.warehouse.fetched)
        third = await self.executor(assignment).run()
        self.assertEqual(third.result.stdout, "genuine\n")
        self.assertEqual(len(self.warehouse.fetched), fetched + 1)

    async def test_bundle_with_a_path_leaving_its_folder_is_refused(self) -> None:
        """A bundle holding ``../`` fails the attempt, and nothing lands outside its folder."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name in ("run.sh", "../escape.sh"):
                member = tarfile.TarInfo(name)
                data = b"#!/bin/sh\necho hi\n"
                member.size, member.mode = len(data), 0o755
                tar.addfile(member, io.BytesIO(data))
        digest, size = self.warehouse.put(archive.getvalue())
        plain = self.assignment("true")
        bundled = Assignment(
            **{
                **msgspec.structs.asdict(plain),
                "binary": BinaryRef(digest=digest, size=size, bundle=True, entry="run.sh"),
                "sources": {digest: (SOURCE,)},
            }
        )
        done = await self.executor(bundled).run()
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertIn("path leaves the bundle", done.result.error or "")
        self.assertEqual(list(self.cache.root.rglob("escape.sh")), [])


@implementer(IReactorProcess)
class ClockWithRealProcesses(Clock):
    """Time the test decides; processes real."""

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        return reactor.spawnProcess(*args, **kwargs)


def test_root_worker_drops_to_nobody_only_where_nobody_can_reach(tmp_path: Path) -> None:
    """As root, tasks run as nobody when nobody can reach the folders; not otherwise."""
    nobody = SandboxUser("nobody", 65534, 65534)
    reachable = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        reachable.chmod(0o755)
        plan = plan_sandbox([reachable], euid=0, find_user=lambda _: nobody)
        assert plan.user == nobody
    finally:
        reachable.rmdir()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    plan = plan_sandbox([private / "work"], euid=0, find_user=lambda _: nobody)
    assert plan.user is None
    assert plan_sandbox([tmp_path], euid=1000).user is None


def test_sandbox_becomes_launcher_options(tmp_path: Path) -> None:
    """Each part of the sandbox is one option of the launcher."""
    sandbox = Sandbox(user=SandboxUser("nobody", 65534, 65533), landlock=True, processes=8)
    assert sandbox.launcher_options(tmp_path, "ab" * 32) == [
        "--sha256",
        "ab" * 32,
        "--processes",
        "8",
        "--writable",
        str(tmp_path),
        "--user",
        "65534:65533",
    ]


def test_process_limit_counts_the_users_tasks_above_what_it_runs() -> None:
    """An attempt of an ordinary user may start --processes more tasks than the user runs."""
    options = Options(program="p", args=["p"], user=(65534, 65533), processes=8)
    assert process_limit(options, count=lambda uid: {65534: 5}[uid]) == 13
    assert process_limit(options, count=lambda uid: None) is None
    assert process_limit(dataclasses.replace(options, processes=None), count=lambda uid: 5) is None


def test_process_limit_is_not_counted_for_root() -> None:
    """Root is not held to RLIMIT_NPROC: its tasks are not counted (every /proc read) for it."""

    def count(uid: int) -> int:
        raise AssertionError("root's tasks counted")

    options = Options(program="p", args=["p"], user=(0, 0), processes=8)
    assert process_limit(options, count=count) is None
