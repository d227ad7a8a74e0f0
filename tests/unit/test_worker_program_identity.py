"""A program the worker hashed once is trusted by its identity, and any change to it is caught.

Three levels: :class:`VerifiedPrograms` (what the worker records), both launchers given
``--known-identity`` (the C one and the Python one side by side, as in
test_worker_native_launcher), and attempts run end to end through the native launcher with trust in force (every sandbox test
again, and a program changed in place between two attempts).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec
import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SkipTest

from tests.unit import test_worker_native_launcher as native_tests
from tests.unit import test_worker_sandbox as sandbox_tests
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker.program_identity import (
    FileIdentity,
    VerifiedPrograms,
    is_sealed,
    parse_identity,
)
from xwch.worker.sandbox import Sandbox
from xwch.worker.spawner import AttemptProcess, NativeSpawner

PROGRAM = b"#!/bin/sh\necho genuine\n"
DIGEST = hashlib.sha256(PROGRAM).hexdigest()


def always_settled() -> float:
    """A worker's clock for which every file's last change is long past."""
    return math.inf


def never_settled() -> float:
    """A worker's clock for which every file has just changed."""
    return -math.inf


def sealed_program(folder: Path, content: bytes = PROGRAM, name: str = "program") -> Path:
    path = folder / name
    path.write_bytes(content)
    path.chmod(0o555)
    return path


def change_in_place(path: Path, content: bytes) -> None:
    """What a careless tool would do: make it writable, write, seal it again."""
    path.chmod(0o755)
    path.write_bytes(content)
    path.chmod(0o555)


def hashed(programs: VerifiedPrograms, path: Path, digest: str = DIGEST) -> FileIdentity | None:
    """Hash and record ``path`` as the worker does before trusting it."""
    identity = programs.hash_if_unchanged(path, digest)
    if identity is not None:
        programs.record(path, digest, identity)
    return identity


# What the worker records


def test_a_program_hashed_unchanged_is_trusted_by_its_identity(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=always_settled)
    assert programs.trusted(program, DIGEST) is None
    identity = hashed(programs, program)
    assert identity == FileIdentity.of(program.stat())
    assert programs.trusted(program, DIGEST) == identity
    # Trust is for the digest hashed, not another one the same path is asked for.
    assert programs.trusted(program, "0" * 64) is None


def test_a_program_changed_in_place_is_trusted_no_more(tmp_path: Path) -> None:
    """Same size, same name, same inode: its ctime moved, and that is enough."""
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=always_settled)
    hashed(programs, program)
    change_in_place(program, PROGRAM.replace(b"genuine", b"evil!!!"))
    assert program.stat().st_size == len(PROGRAM)
    assert programs.trusted(program, DIGEST) is None
    # Hashed again, its bytes do not match: nothing is recorded.
    assert hashed(programs, program) is None
    assert programs.trusted(program, DIGEST) is None


def test_a_mode_change_alone_takes_trust_away(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=always_settled)
    hashed(programs, program)
    program.chmod(0o500)
    assert programs.trusted(program, DIGEST) is None


def test_a_program_put_in_its_place_is_not_the_one_hashed(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=always_settled)
    hashed(programs, program)
    other = sealed_program(tmp_path, name="other")
    os.replace(other, program)
    assert programs.trusted(program, DIGEST) is None


def test_a_program_whose_last_change_is_recent_is_hashed_but_not_recorded(
    tmp_path: Path,
) -> None:
    """A change in the same tick of the file system's clock would keep its ctime."""
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=never_settled)
    assert not programs.worth_hashing(program)
    assert hashed(programs, program) is None
    assert programs.trusted(program, DIGEST) is None


def test_a_writable_program_is_never_trusted(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    program.chmod(0o755)
    programs = VerifiedPrograms(now=always_settled)
    assert not programs.worth_hashing(program)
    assert hashed(programs, program) is None


def test_a_program_of_another_user_is_never_trusted(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    owner = program.stat().st_uid
    assert is_sealed(program.stat(), owner)
    assert not is_sealed(program.stat(), owner + 1)
    programs = VerifiedPrograms(now=always_settled, euid=owner + 1)
    assert not programs.worth_hashing(program)
    assert hashed(programs, program) is None


def test_a_program_is_hashed_once_however_many_attempts_run_it(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    programs = VerifiedPrograms(now=always_settled)
    hashes: list[Path] = []

    def run_blocking(
        call: Callable[[Path, str], FileIdentity | None], path: Path, digest: str
    ) -> Deferred[FileIdentity | None]:
        hashes.append(path)
        return succeed(call(path, digest))

    identities = [
        Deferred.fromCoroutine(programs.identity_for(program, DIGEST, run_blocking))
        for _ in range(3)
    ]
    results = [d.result for d in identities]  # type: ignore[attr-defined]
    assert results == [FileIdentity.of(program.stat())] * 3
    assert hashes == [program]


@pytest.mark.parametrize(
    "value", ["1:2:3", "1:2:3:4:5", "a:2:3:4", "-1:2:3:4", " 1:2:3:4", "1:2:3:18446744073709551616"]
)
def test_a_malformed_identity_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_identity(value)


def test_an_identity_goes_to_the_launcher_and_back() -> None:
    identity = FileIdentity(2049, 1234567, 1_700_000_000_123_456_789, 42)
    assert parse_identity(identity.option()) == identity


# Both launchers


def _launch_both(tmp_path: Path, argv: list[str]) -> tuple[object, object]:
    return native_tests._both(argv, dict(native_tests._BASE_ENV), tmp_path)


def test_a_trusted_identity_spares_the_hash(tmp_path: Path) -> None:
    """Given the identity the file still has, neither launcher reads the program: a digest it
    would refuse is not even looked at."""
    program = sealed_program(tmp_path)
    trust = FileIdentity.of(program.stat()).option()
    argv = ["--sha256", "0" * 64, "--known-identity", trust, "--", str(program)]
    python, native = _launch_both(tmp_path, argv)
    assert native == python == (0, None, "genuine\n")


def test_a_program_changed_in_place_after_it_was_trusted_is_refused(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    trust = FileIdentity.of(program.stat()).option()
    change_in_place(program, PROGRAM.replace(b"genuine", b"evil!!!"))
    argv = ["--sha256", DIGEST, "--known-identity", trust, "--", str(program)]
    python, native = _launch_both(tmp_path, argv)
    assert native == python
    code, status, stdout = native  # type: ignore[misc]
    assert (code, status["kind"], stdout) == (126, "digest", "")
    assert "do not match its digest" in status["message"]


def test_a_writable_program_is_hashed_whatever_its_identity(tmp_path: Path) -> None:
    program = sealed_program(tmp_path)
    program.chmod(0o755)
    trust = FileIdentity.of(program.stat()).option()
    argv = ["--sha256", "0" * 64, "--known-identity", trust, "--", str(program)]
    python, native = _launch_both(tmp_path, argv)
    assert native == python
    assert native[0] == 126  # type: ignore[index]


def test_a_program_of_another_user_is_hashed_whatever_its_identity(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    program = sealed_program(tmp_path)
    os.chown(program, 65534, 65534)
    trust = FileIdentity.of(program.stat()).option()
    argv = ["--sha256", "0" * 64, "--known-identity", trust, "--", str(program)]
    python, native = _launch_both(tmp_path, argv)
    assert native == python
    assert native[0] == 126  # type: ignore[index]


@pytest.mark.parametrize("value", ["1:2:3", "x:1:2:3", "1:2:3:4:", "1:2:3:99999999999999999999"])
def test_a_malformed_trust_is_refused_the_same_way(tmp_path: Path, value: str) -> None:
    argv = ["--sha256", DIGEST, "--known-identity", value, "--", sys.executable, "-c", "pass"]
    python, native = _launch_both(tmp_path, argv)
    # Refused while the options are read, before the status pipe is theirs to write on.
    assert native == python == (126, None, "")
    for launcher in (
        [sys.executable, "-I", "-m", "xwch.worker.launcher"],
        [str(native_tests._launcher())],
    ):
        done = subprocess.run([*launcher, *argv], capture_output=True, text=True, timeout=60)
        assert done.stderr == f"xwch-launcher: bad value for --known-identity: '{value}'\n"


# Attempts


class _RecordingSpawner:
    """The native spawner, remembering the launcher options of each attempt."""

    def __init__(self, spawner: NativeSpawner) -> None:
        self._spawner = spawner
        self.argvs: list[list[str]] = []

    def spawn(
        self,
        process: AttemptProcess,
        launcher_argv: Sequence[str],
        env: Mapping[str, str],
        path: str,
    ) -> Deferred[int]:
        self.argvs.append(list(launcher_argv))
        return self._spawner.spawn(process, launcher_argv, env, path)


class TrustedProgramSandboxTests(sandbox_tests.SandboxTests):
    """Every sandbox test again, through the native launcher, with program identities trusted
    as a worker trusts them; then trust itself, attempt after attempt."""

    def setUp(self) -> None:
        super().setUp()
        if not self.sandbox.seals_cache:
            raise SkipTest("tasks could write the cache here (no Landlock, not root)")
        self.programs = VerifiedPrograms(now=always_settled)
        native = NativeSpawner(reactor, str(native_tests._launcher()))  # type: ignore[arg-type]
        self.spawner = _RecordingSpawner(native)

    def trusts(self) -> list[bool]:
        return ["--known-identity" in argv for argv in self.spawner.argvs]

    async def test_the_program_is_trusted_from_its_first_attempt_on(self) -> None:
        """The worker hashes the program once, before the first attempt; every launcher is told
        its identity."""
        assignment = self.assignment("echo genuine")
        for attempt in ("a1", "a2", "a3"):
            done = await self.executor(
                Assignment(**{**_fields(assignment), "attempt": attempt})
            ).run()
            self.assertEqual(done.result.outcome, OUTCOME_SUCCEEDED, done.result.error)
            self.assertEqual(done.result.stdout, "genuine\n")
        self.assertEqual(self.trusts(), [True, True, True])

    async def test_a_program_changed_in_place_between_attempts_is_refused(self) -> None:
        """Trusted, then changed in place (same size): the next attempt is refused before the
        program runs, the copy removed and fetched afresh."""
        assignment = self.assignment("echo genuine")
        first = await self.executor(assignment).run()
        self.assertEqual(first.result.stdout, "genuine\n")
        program = self.cache.program_path(assignment.binary.digest)
        before = program.stat().st_size
        change_in_place(program, program.read_bytes().replace(b"genuine", b"evil!!!"))
        self.assertEqual(program.stat().st_size, before)
        second = await self.executor(Assignment(**{**_fields(assignment), "attempt": "a2"})).run()
        self.assertEqual(second.result.outcome, OUTCOME_FAILED)
        self.assertIn("do not match its digest", second.result.error or "")
        self.assertNotIn("evil", second.result.stdout)
        self.assertFalse(program.exists())
        # The changed file earned no trust: its launcher hashed it.
        self.assertEqual(self.trusts(), [True, False])
        third = await self.executor(Assignment(**{**_fields(assignment), "attempt": "a3"})).run()
        self.assertEqual(third.result.stdout, "genuine\n")

    async def test_without_a_sealed_cache_every_attempt_hashes(self) -> None:
        """Where a task could write the cache, no identity is ever handed to a launcher."""
        self.sandbox = Sandbox(user=None, landlock=False, limits=self.sandbox.limits)
        assignment = self.assignment("echo genuine")
        for attempt in ("a1", "a2"):
            done = await self.executor(
                Assignment(**{**_fields(assignment), "attempt": attempt})
            ).run()
            self.assertEqual(done.result.stdout, "genuine\n")
        self.assertEqual(self.trusts(), [False, False])


def _fields(assignment: Assignment) -> dict[str, object]:
    return msgspec.structs.asdict(assignment)
