"""The attempt executor, with real processes: /bin/sh scripts stand in for native programs."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psutil
from msgspec.structs import replace
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from xwch.bundle import pack_bundle
from xwch.protocol.objects import BinaryRef, InputFile, OutputFile, Source
from xwch.protocol.wire import INLINE_MOST, LOG_TAIL_BYTES, OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker.cache import ObjectCache
from xwch.worker.executor import ERROR_KILLED, AttemptError, AttemptExecutor, CompletedAttempt
from xwch.worker.workfolders import WorkFolders

SOURCE = Source(url="http://warehouse.test", capability="cap")
# Only a bound for a broken test: every wait below ends on an event long before.
PATIENCE = 20.0


class FakeWarehouse:
    """Objects by digest, fetched into the cache by copying bytes (no network)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fetched: list[str] = []
        self.hold: Deferred[None] | None = None

    def put(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        self.objects[digest] = data
        return digest, len(data)

    async def fetch(self, sources: Sequence[Source], digest: str, size: int, dest: Path) -> None:
        self.fetched.append(digest)
        if self.hold is not None:
            await self.hold
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.objects[digest])


async def wait_until(condition: object, what: str) -> None:
    """Wait for ``condition()`` to hold, checking at each turn of the reactor."""
    deadline = reactor.seconds() + PATIENCE
    while not condition():  # type: ignore[operator]
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.01)


def is_dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (the test machine's init may not reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class ExecutorTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.warehouse = FakeWarehouse()
        self.cache = ObjectCache(self.root / "cache", self.warehouse.fetch)
        self.work = self.root / "work"

    def assignment(
        self,
        script: str,
        outputs: Sequence[str] = (),
        inputs: Mapping[str, bytes] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
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
            number=2,
            binary=BinaryRef(digest=digest, size=size),
            args=("first arg", "second"),
            env=dict(env or {}),
            inputs=tuple(files),
            outputs=tuple(outputs),
            timeout=timeout,
            sources={d: (SOURCE,) for d in self.warehouse.objects},
        )

    def output_bytes(self, output: OutputFile) -> bytes:
        """An output's bytes: in the result if small, else in the cache."""
        if output.content is not None:
            return output.content
        return self.cache.path_for(output.digest).read_bytes()

    def executor(self, assignment: Assignment) -> AttemptExecutor:
        executor = AttemptExecutor(reactor, self.cache, self.work, assignment)
        # Whatever a test does, no process of it outlives it.
        self.addCleanup(executor.kill)
        self.addCleanup(executor.discard)
        return executor

    async def run_script(self, script: str, **kwargs: object) -> CompletedAttempt:
        return await self.executor(self.assignment(script, **kwargs)).run()  # type: ignore[arg-type]

    async def test_success_returns_outputs_in_the_cache(self) -> None:
        """A program that exits 0 and writes its output succeeds; the output is kept by digest."""
        done = await self.run_script(
            f'echo "$1" > out.txt; head -c {INLINE_MOST} /dev/zero >> out.txt; echo finished',
            outputs=["out.txt"],
        )
        result = done.result
        self.assertEqual(
            (result.outcome, result.exit_code, result.error), (OUTCOME_SUCCEEDED, 0, None)
        )
        self.assertEqual(result.stdout, "finished\n")
        [output] = result.outputs
        expected = b"first arg\n" + bytes(INLINE_MOST)
        self.assertEqual(output.name, "out.txt")
        self.assertEqual(
            (output.digest, output.size, output.content),
            (hashlib.sha256(expected).hexdigest(), len(expected), None),
        )
        self.assertEqual(done.files[output.digest], self.cache.path_for(output.digest))
        self.assertEqual(self.cache.path_for(output.digest).read_bytes(), expected)

    async def test_small_outputs_come_with_their_bytes_big_ones_without(self) -> None:
        """An output of at most INLINE_MOST bytes travels in the result, not kept in the cache
        (the coordinator keeps it); a bigger one does not (it is uploaded), kept in the cache."""
        done = await self.run_script(
            f"echo small > small.txt; head -c {INLINE_MOST + 1} /dev/zero > big.bin",
            outputs=["small.txt", "big.bin"],
        )
        small, big = done.result.outputs
        self.assertEqual((small.content, small.size), (b"small\n", 6))
        self.assertEqual((big.content, big.size), (None, INLINE_MOST + 1))
        self.assertFalse(self.cache.has(small.digest, small.size))
        self.assertTrue(self.cache.has(big.digest, big.size))
        self.assertEqual(set(done.files), {big.digest})

    async def test_an_input_sent_inline_needs_no_download(self) -> None:
        """Inputs the coordinator keeps come in the assignment: no source, no fetch."""
        data = b"kept by the coordinator\n"
        digest = hashlib.sha256(data).hexdigest()
        assignment = replace(
            self.assignment("cat in.txt > out.txt", outputs=["out.txt"]),
            inputs=(InputFile(path="in.txt", digest=digest, size=len(data)),),
            inline={digest: data},
        )
        done = await self.executor(assignment).run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        self.assertEqual(output.content, data)
        self.assertNotIn(digest, self.warehouse.objects)

    async def test_inputs_are_placed_at_their_paths(self) -> None:
        """Inputs, including those in folders, are in the working directory before the start."""
        done = await self.run_script(
            "cat palette.txt tiles/tile-3/tile.pgm > out.txt",
            inputs={"palette.txt": b"red\n", "tiles/tile-3/tile.pgm": b"P5\n"},
            outputs=["out.txt"],
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        self.assertEqual(self.output_bytes(output), b"red\nP5\n")

    async def test_a_task_cannot_change_its_inputs_for_the_next_task(self) -> None:
        """A task that makes its input writable and overwrites it leaves the cache intact."""
        done = await self.run_script(
            "chmod u+w data.txt; echo evil > data.txt", inputs={"data.txt": b"good\n"}
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        digest = hashlib.sha256(b"good\n").hexdigest()
        self.assertEqual(self.cache.path_for(digest).read_bytes(), b"good\n")

    async def test_bundle_runs_its_entry(self) -> None:
        """A bundle binary is unpacked once and its entry runs, finding its sibling files."""
        folder = self.root / "bundle-src"
        (folder / "bin").mkdir(parents=True)
        (folder / "bin" / "run.sh").write_text('#!/bin/sh\ncat "$(dirname "$0")/data.txt"\n')
        (folder / "bin" / "run.sh").chmod(0o755)
        (folder / "bin" / "data.txt").write_text("from the bundle\n")
        archive = self.root / "bundle.tar"
        pack_bundle(folder, archive)
        digest, size = self.warehouse.put(archive.read_bytes())
        plain = self.assignment("true")
        bundled = Assignment(
            **{
                **msgspec.structs.asdict(plain),
                "binary": BinaryRef(digest=digest, size=size, bundle=True, entry="bin/run.sh"),
                "sources": {digest: (SOURCE,)},
            }
        )
        done = await self.executor(bundled).run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        self.assertEqual(done.result.stdout, "from the bundle\n")

    async def test_missing_output_fails(self) -> None:
        """A program that exits 0 without its declared output fails, naming the output."""
        done = await self.run_script("echo forgot", outputs=["out.txt"])
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual((done.result.exit_code, done.result.error), (0, "missing output: out.txt"))
        self.assertEqual(done.result.stdout, "forgot\n")

    async def test_nonzero_exit_fails_and_keeps_stderr(self) -> None:
        """A program exiting with status 3 fails with exit code 3 and its standard error kept."""
        done = await self.run_script("echo 'cannot open palette' >&2; exit 3", outputs=["out.txt"])
        result = done.result
        self.assertEqual((result.outcome, result.exit_code), (OUTCOME_FAILED, 3))
        self.assertEqual(result.stderr, "cannot open palette\n")
        self.assertEqual(result.error, "exited with status 3")

    async def test_environment_is_minimal_plus_task_and_xwch_variables(self) -> None:
        """The program sees XWCH_JOB/TASK/ATTEMPT and its env, not the worker's own variables."""
        os.environ["XWCH_TEST_SECRET"] = "volunteer's"
        self.addCleanup(os.environ.pop, "XWCH_TEST_SECRET")
        done = await self.run_script(
            "env > env.txt",
            env={"COLOR": "blue", "XWCH_LIMIT_CPU": "1"},
            outputs=["env.txt"],
        )
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        lines = self.output_bytes(output).decode().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        self.assertEqual(env["XWCH_JOB"], "j1")
        self.assertEqual(env["XWCH_TASK"], "t1")
        self.assertEqual(env["XWCH_ATTEMPT"], "2")
        self.assertEqual(env["XWCH_ATTEMPT_ID"], "a1")
        self.assertEqual(env["COLOR"], "blue")
        self.assertEqual(env["PATH"], "/usr/local/bin:/usr/bin:/bin")
        self.assertEqual(env["HOME"], str(self.work / "a1"))
        self.assertNotIn("XWCH_TEST_SECRET", env)
        self.assertNotIn("XWCH_LIMIT_CPU", env)

    async def test_timeout_kills_the_attempt(self) -> None:
        """An attempt running past its timeout is killed and fails with "timed out after N s"."""
        done = await self.run_script("sleep 30", timeout=0.5)
        result = done.result
        self.assertEqual((result.outcome, result.exit_code), (OUTCOME_FAILED, None))
        self.assertEqual(result.error, "timed out after 0.5 s")
        self.assertLess(result.duration, PATIENCE)

    async def test_kill_kills_every_process_of_the_attempt(self) -> None:
        """kill() ends the program and the processes it started in the background."""
        executor = self.executor(self.assignment("sleep 30 & echo $! > bg.pid; wait"))
        running = Deferred.fromCoroutine(executor.run())
        pid_file = self.work / "a1" / "bg.pid"
        await wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"), "pid")
        background = int(pid_file.read_text())
        self.addCleanup(_kill_quietly, background)
        self.assertFalse(is_dead(background))
        executor.kill()
        done = await running
        self.assertEqual((done.result.outcome, done.result.error), (OUTCOME_FAILED, "killed"))
        # The background sleep held the output pipes, so the attempt ended only once it was
        # dead; a zombie waiting for its reaper counts as dead.
        await wait_until(lambda: is_dead(background), "the background process to die")

    async def test_leftover_background_processes_die_with_the_program(self) -> None:
        """A program that exits leaving a background process behind does not leave it running."""
        done = await self.run_script("sleep 30 & echo $! > bg.pid", outputs=["bg.pid"])
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        background = int(self.output_bytes(output).decode())
        self.addCleanup(_kill_quietly, background)
        await wait_until(lambda: is_dead(background), "the background process to die")

    async def test_a_folder_used_again_holds_nothing_of_the_last_attempt(self) -> None:
        """With folders shared by a worker's attempts, the second attempt gets the first's
        folder emptied: it sees none of the files the first left, temporary ones included."""
        folders = WorkFolders(self.work)
        first = AttemptExecutor(
            reactor,
            self.cache,
            self.work,
            self.assignment('echo left > left.txt; echo tmp > "$TMPDIR/t"', attempt="a1"),
            folders=folders,
        )
        self.assertEqual((await first.run()).result.outcome, OUTCOME_SUCCEEDED)
        await first.discard()
        self.assertEqual(folders.spares, 1)
        second = AttemptExecutor(
            reactor,
            self.cache,
            self.work,
            self.assignment('ls -A . "$TMPDIR" > seen.txt', outputs=["seen.txt"], attempt="a2"),
            folders=folders,
        )
        self.addCleanup(second.discard)
        done = await second.run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        self.assertEqual(folders.spares, 0)
        [output] = done.result.outputs
        listing = self.output_bytes(output).decode()
        self.assertNotIn("left.txt", listing)
        self.assertNotIn("\nt\n", listing)

    async def test_kill_while_downloading_stops_the_download(self) -> None:
        """An attempt cancelled before its inputs arrived ends at once without running."""
        self.warehouse.hold = Deferred()
        executor = self.executor(self.assignment("touch ran", outputs=["ran"]))
        running = Deferred.fromCoroutine(executor.run())
        self.assertFalse(running.called)
        executor.kill()
        done = await running
        self.assertEqual(done.result.error, "killed")
        self.assertFalse((self.work / "a1" / "ran").exists())

    async def test_symlink_output_is_refused(self) -> None:
        """An output that is a symbolic link (to a file outside, say) fails the attempt."""
        done = await self.run_script("ln -s /etc/passwd out.txt", outputs=["out.txt"])
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual(done.result.error, "output is a symbolic link: out.txt")

    async def test_output_through_a_symlinked_folder_is_refused(self) -> None:
        """An output reached through a linked folder leading outside the working dir fails."""
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "out.txt").write_text("not the task's\n")
        done = await self.run_script(f"ln -s {outside} dir", outputs=["dir/out.txt"])
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual(done.result.error, "output is outside the working directory: dir/out.txt")
        self.assertTrue((outside / "out.txt").exists())

    async def test_logs_keep_the_last_64_kib(self) -> None:
        """A chatty program's standard output is kept as its last 64 KiB, the end intact."""
        done = await self.run_script("head -c 200000 /dev/zero | tr '\\0' a; printf END")
        stdout = done.result.stdout
        self.assertEqual(len(stdout), LOG_TAIL_BYTES)
        self.assertTrue(stdout.endswith("aaaEND"))

    async def test_a_program_that_cannot_start_fails(self) -> None:
        """A binary that is not a valid executable fails the attempt with the reason in stderr,
        naming it as the job file does, not by the path of its copy in the worker's cache."""
        digest, size = self.warehouse.put(b"\x00\x01 not a program")
        plain = self.assignment("true")
        broken = Assignment(
            **{
                **msgspec.structs.asdict(plain),
                "binary": BinaryRef(digest=digest, size=size, name="render"),
                "sources": {digest: (SOURCE,)},
            }
        )
        done = await self.executor(broken).run()
        self.assertEqual((done.result.outcome, done.result.exit_code), (OUTCOME_FAILED, 126))
        self.assertIn("cannot run binary 'render'", done.result.stderr)
        self.assertIn("binary 'render'", done.result.error or "")
        self.assertNotIn(digest, (done.result.error or "") + done.result.stderr)

    async def test_resource_limits_apply_to_the_program(self) -> None:
        """Limits the worker sets (here CPU seconds) bind the program, not the task's env."""
        assignment = self.assignment("ulimit -t > limit.txt", outputs=["limit.txt"])
        executor = AttemptExecutor(reactor, self.cache, self.work, assignment, limits={"CPU": 77})
        self.addCleanup(executor.kill)
        done = await executor.run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        [output] = done.result.outputs
        self.assertEqual(self.output_bytes(output).decode(), "77\n")

    def test_attempt_id_cannot_name_another_folder(self) -> None:
        """An attempt id like ".." is refused before any folder is made or removed."""
        for bad in ("..", ".", "", "a/b", ".spare"):
            with self.assertRaises(AttemptError):
                AttemptExecutor(
                    reactor, self.cache, self.work, self.assignment("true", attempt=bad)
                )

    async def test_discard_removes_the_working_directory(self) -> None:
        """Once reported, an attempt leaves nothing in the worker's work folder."""
        executor = self.executor(self.assignment("mkdir -p ro/sub; chmod 500 ro; echo x > f"))
        done = await executor.run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        await executor.discard()
        self.assertEqual(list(self.work.iterdir()), [])


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _HeldThreadPool:
    """A thread pool whose work runs only when the test says so."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, call: Any, *args: Any) -> None:
        self.queued.append((on_result, call, args))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for on_result, call, args in queued:
            try:
                on_result(True, call(*args))
            except Exception:
                on_result(False, Failure())


@implementer(IReactorThreads)
class _ReactorWithHeldThreads(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.pool = _HeldThreadPool()

    def getThreadPool(self) -> Any:
        return self.pool

    def callFromThread(self, call: Any, *args: Any, **kwargs: Any) -> None:
        call(*args, **kwargs)

    def callInThread(self, call: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def suggestThreadPoolSize(self, size: int) -> None:
        pass


class FolderOffReactorTests(SynchronousTestCase):
    def test_a_folder_still_being_made_when_killed_is_removed_once_made(self) -> None:
        """Killed while its folder is made in a thread: discarding waits for the making,
        then removes it, so nothing is left behind."""
        root = Path(self.mktemp()).absolute()
        warehouse = FakeWarehouse()
        cache = ObjectCache(root / "cache", warehouse.fetch)
        digest, size = warehouse.put(b"#!/bin/sh\ntrue\n")
        assignment = Assignment(
            attempt="a1",
            job="j1",
            task="t1",
            number=1,
            binary=BinaryRef(digest=digest, size=size),
            args=(),
            env={},
            inputs=(),
            outputs=(),
            timeout=None,
            sources={digest: (SOURCE,)},
        )
        reactor = _ReactorWithHeldThreads()
        executor = AttemptExecutor(reactor, cache, root / "work", assignment)  # type: ignore[arg-type]
        ran = Deferred.fromCoroutine(executor.run())
        executor.kill()
        self.assertEqual(self.successResultOf(ran).result.error, ERROR_KILLED)
        discarded = executor.discard()
        self.assertNoResult(discarded)
        reactor.pool.run_queued()  # the folder is made...
        self.assertTrue(executor.workdir.is_dir())
        reactor.pool.run_queued()  # ...then removed
        self.successResultOf(discarded)
        self.assertFalse(executor.workdir.exists())


class SignedProgramTests(TestCase):
    """A worker that trusts keys checks each program itself, whatever the coordinator sent."""

    timeout = 60

    def setUp(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        root = Path(self.mktemp()).absolute()
        self.warehouse = FakeWarehouse()
        self.cache = ObjectCache(root / "cache", self.warehouse.fetch)
        self.work = root / "work"
        self.key = Ed25519PrivateKey.generate()

    def assignment(self, script: str) -> Assignment:
        digest, size = self.warehouse.put(f"#!/bin/sh\n{script}\n".encode())
        return Assignment(
            attempt="a1",
            job="j1",
            task="t1",
            number=1,
            binary=BinaryRef(digest=digest, size=size, name="prog"),
            args=(),
            env={},
            inputs=(),
            outputs=(),
            sources={digest: (SOURCE,)},
        )

    def trusting_executor(self, assignment: Assignment) -> AttemptExecutor:
        from xwch.signing import format_public_key

        executor = AttemptExecutor(
            reactor,
            self.cache,
            self.work,
            assignment,
            trusted_keys=frozenset({format_public_key(self.key.public_key())}),
        )
        self.addCleanup(executor.kill)
        self.addCleanup(executor.discard)
        return executor

    def signed_by(self, assignment: Assignment, key: Any, job_name: str) -> Assignment:
        from xwch.protocol.objects import ProgramSigned
        from xwch.signing import sign_program

        binary = replace(assignment.binary, name="prog")
        signature = sign_program(key, binary.digest, "prog", job_name)
        signed = ProgramSigned(signature.key, signature.signature)
        return replace(assignment, binary=replace(binary, signed=signed, job_name=job_name))

    async def test_an_unsigned_program_is_refused_before_it_is_fetched(self) -> None:
        """Sent an unsigned program (a coordinator told wrong), the worker refuses it with the
        reason, and never fetches it nor makes it executable."""
        assignment = self.assignment("echo ran")
        done = await self.trusting_executor(assignment).run()
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertIn("refused to run: program 'prog' is not signed", done.result.error or "")
        self.assertEqual(self.warehouse.fetched, [])
        self.assertFalse(self.cache.program_path(assignment.binary.digest).exists())

    async def test_a_program_signed_by_another_key_or_for_another_job_is_refused(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        stranger = self.signed_by(self.assignment("echo ran"), Ed25519PrivateKey.generate(), "j")
        done = await self.trusting_executor(stranger).run()
        self.assertIn("a key this worker does not trust", done.result.error or "")
        replayed = self.signed_by(self.assignment("echo ran"), self.key, "another job")
        replayed = replace(replayed, binary=replace(replayed.binary, job_name="this job"))
        done = await self.trusting_executor(replayed).run()
        self.assertIn("does not verify", done.result.error or "")
        self.assertEqual(self.warehouse.fetched, [])

    async def test_a_program_signed_by_a_trusted_key_runs(self) -> None:
        assignment = self.signed_by(self.assignment("echo ran"), self.key, "the job")
        done = await self.trusting_executor(assignment).run()
        self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
        self.assertEqual(done.result.stdout, "ran\n")
