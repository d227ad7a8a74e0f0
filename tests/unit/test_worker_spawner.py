"""Attempts started by the fork server: the same behaviour as a fresh launcher, and its failures.

The executor's and the sandbox's tests run again here with every attempt forked by a
:class:`ForkServerSpawner` (each test gets its own server, stopped at its end).
"""

from __future__ import annotations

import os
import signal
import sys

import psutil
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.unit import test_worker_executor as executor_tests
from tests.unit import test_worker_sandbox as sandbox_tests
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment
from xwch.worker.executor import AttemptExecutor
from xwch.worker.spawner import ForkServerSpawner

wait_until = executor_tests.wait_until


def _start_spawner(test: TestCase) -> ForkServerSpawner:
    spawner = ForkServerSpawner(reactor, sys.executable)
    spawner.startService()
    # Cleanups run last-in first-out: the attempts (killed by the tests' own cleanups, added
    # later) are gone before the server is stopped.
    test.addCleanup(spawner.stopService)
    return spawner


class ForkServerExecutorTests(executor_tests.ExecutorTests):
    def setUp(self) -> None:
        super().setUp()
        self.spawner = _start_spawner(self)

    def executor(self, assignment: Assignment) -> AttemptExecutor:
        executor = AttemptExecutor(reactor, self.cache, self.work, assignment, spawner=self.spawner)
        self.addCleanup(executor.kill)
        self.addCleanup(executor.discard)
        return executor

    async def test_exit_status_and_logs_come_back(self) -> None:
        """A forked attempt's exit status, output and error reach the result."""
        done = await self.run_script('echo "out $1"; echo err >&2; exit 7')
        self.assertEqual((done.result.outcome, done.result.exit_code), (OUTCOME_FAILED, 7))
        self.assertEqual(done.result.error, "exited with status 7")
        self.assertEqual((done.result.stdout, done.result.stderr), ("out first arg\n", "err\n"))

    async def test_many_attempts_share_one_server(self) -> None:
        """Attempts one after the other and side by side are forked by the same server."""
        first = await self.run_script("echo one > out.txt", outputs=["out.txt"], attempt="a1")
        server = self.spawner.server_pid
        self.assertIsNotNone(server)
        together = [
            Deferred.fromCoroutine(
                self.executor(self.assignment(f"echo {n}", attempt=f"b{n}")).run()
            )
            for n in range(4)
        ]
        results = [await attempt for attempt in together]
        self.assertEqual(first.result.outcome, OUTCOME_SUCCEEDED, first.result.error)
        self.assertEqual([r.result.stdout for r in results], [f"{n}\n" for n in range(4)])
        self.assertEqual(self.spawner.server_pid, server)

    async def test_server_dying_fails_its_attempts_and_another_starts(self) -> None:
        """A fork server killed mid-attempt: the attempt is killed and fails, nothing of it is
        left running, and the next attempt runs on a new server."""
        executor = self.executor(self.assignment("echo up > started; sleep 60 & wait"))
        running = Deferred.fromCoroutine(executor.run())
        await wait_until(lambda: (executor.workdir / "started").exists(), "the task to start")
        group = executor.process_group
        server = self.spawner.server_pid
        assert group is not None and server is not None
        members = [p for p in psutil.process_iter() if _group_of(p.pid) == group]
        os.kill(server, signal.SIGKILL)
        done = await running
        self.assertEqual(done.result.outcome, OUTCOME_FAILED)
        self.assertEqual(done.result.error, "killed by signal SIGKILL")
        await wait_until(
            lambda: all(executor_tests.is_dead(p.pid) for p in members), "the attempt to die"
        )
        after = await self.run_script("echo again")
        self.assertEqual(after.result.stdout, "again\n")
        self.assertNotIn(self.spawner.server_pid, (None, server))

    async def test_stopping_stops_the_server(self) -> None:
        """Once stopped, the spawner leaves no fork server behind."""
        await self.run_script("true")
        server = self.spawner.server_pid
        assert server is not None
        await self.spawner.stopService()
        self.assertTrue(executor_tests.is_dead(server))
        self.assertIsNone(self.spawner.server_pid)


class ForkServerSandboxTests(sandbox_tests.SandboxTests):
    def setUp(self) -> None:
        super().setUp()
        self.spawner = _start_spawner(self)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
