"""An attempt's life on its own: slot, run, outputs, result, and being dropped on the way."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_worker_service import FakeAttempt, assignment
from xwch.protocol.objects import Source
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.worker.attempt_runner import AttemptRunner
from xwch.worker.executor import CompletedAttempt
from xwch.worker.run_slots import SlotGate


class FakePull:
    """The pull loop's side: its state set by the test, its wake-ups counted."""

    def __init__(self) -> None:
        self.suspended: str | None = None
        self.stopping = False
        self.woken = 0

    def ahead(self) -> int:
        return 0

    def wake(self) -> None:
        self.woken += 1


class FakeOutputs:
    """Stores outputs at once, unless the test holds the storing back."""

    def __init__(self) -> None:
        self.held_back: Deferred[None] | None = None

    async def store(self, completed: CompletedAttempt, direct: Source | None) -> AttemptResult:
        if self.held_back is not None:
            await self.held_back
        return completed.result


class FakeResults:
    """Each Work Result's answer comes when the test says (``answer``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[AttemptResult, bool]] = []
        self.answers: list[Deferred[None]] = []
        self.waiting = 0

    async def report(self, result: AttemptResult, frees_slot: bool, hold: bool) -> None:
        self.sent.append((result, frees_slot))
        answer: Deferred[None] = Deferred()
        self.answers.append(answer)
        await answer

    def flush(self) -> None:
        pass


class CheckpointingAttempt(FakeAttempt):
    """An attempt that keeps a checkpoint: each save ends when the test says."""

    def __init__(self, a: Assignment) -> None:
        super().__init__(a)
        self.saves: list[Deferred[None]] = []

    def save_checkpoint(self) -> Deferred[None]:
        saved: Deferred[None] = Deferred()
        self.saves.append(saved)
        return saved


class AttemptRunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pull = FakePull()
        self.outputs = FakeOutputs()
        self.results = FakeResults()
        self.attempts: dict[str, FakeAttempt] = {}
        self.failures: list[Failure] = []
        self.runner = AttemptRunner(
            Clock(),
            self.new_attempt,
            SlotGate(1),
            self.outputs,
            self.results,
            self.pull,
            self.in_background,
        )

    def new_attempt(self, a: Assignment) -> FakeAttempt:
        if a.attempt == "..":
            raise ValueError("not an attempt id")
        kind = CheckpointingAttempt if a.attempt.startswith("ck") else FakeAttempt
        attempt = self.attempts[a.attempt] = kind(a)
        return attempt

    def in_background(self, work: Coroutine[Any, Any, None], what: str) -> Deferred[None]:
        d = Deferred.fromCoroutine(work)
        d.addErrback(self.failures.append)
        return d

    def test_an_attempt_is_held_until_its_result_is_answered(self) -> None:
        """The result frees the slot for the next attempt at once, but the attempt counts
        as held (and its folder stays) until the coordinator answered."""
        self.assertEqual(self.runner.start([assignment("a1"), assignment("a2")]), 2)
        self.assertEqual([h.state for h in self.runner.held_attempts()], ["running", "waiting"])
        self.attempts["a1"].succeed(inline=True)
        self.assertEqual([h.state for h in self.runner.held_attempts()], ["reporting", "running"])
        [(result, frees_slot)] = self.results.sent
        self.assertEqual((result.outcome, frees_slot), (OUTCOME_SUCCEEDED, True))
        self.assertFalse(self.attempts["a1"].discarded)
        self.results.answers[0].callback(None)
        self.assertEqual(self.runner.running_attempts(), ["a2"])
        self.assertTrue(self.attempts["a1"].discarded)
        self.assertEqual(self.pull.woken, 1)
        self.assertIsNotNone(self.runner.typical_duration)
        self.assertEqual(self.failures, [])

    def test_an_assignment_it_cannot_set_up_is_reported_failed(self) -> None:
        """So that it runs elsewhere; nothing is held for it."""
        self.assertEqual(self.runner.start([assignment("..")]), 0)
        [(result, frees_slot)] = self.results.sent
        self.assertEqual(
            (result.attempt, result.outcome, frees_slot), ("..", OUTCOME_FAILED, False)
        )
        self.assertEqual(len(self.runner), 0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_dropped_while_storing_its_outputs_it_is_not_reported(self) -> None:
        self.outputs.held_back = Deferred()
        self.runner.start([assignment("a1")])
        self.attempts["a1"].succeed(inline=True)
        self.runner.drop("a1", "cancelled by the coordinator")
        self.assertEqual(self.results.sent, [])
        self.assertEqual(len(self.runner), 0)
        self.assertTrue(self.attempts["a1"].discarded)
        self.assertEqual(self.failures, [])

    def test_a_result_on_its_way_is_cut_short_only_when_stopping(self) -> None:
        """Dropped while its Work Result is sent, an attempt waits for the answer (it may carry
        the next tasks); a stopping worker does not wait."""
        self.runner.start([assignment("a1"), assignment("a2")])
        self.attempts["a1"].succeed(inline=True)
        self.runner.drop("a1", "cancelled by the coordinator")
        self.assertEqual(len(self.runner), 2)
        self.results.answers[0].callback(None)
        self.assertEqual(len(self.runner), 1)
        self.attempts["a2"].succeed(inline=True)
        self.pull.stopping = True
        self.runner.drop("a2", "given back: the worker is stopping")
        self.assertEqual(len(self.runner), 0)
        self.assertEqual(self.failures, [])

    def test_saving_checkpoints_waits_for_the_attempts_that_keep_one(self) -> None:
        """Stopping or giving back saves the checkpoints of the running attempts that keep
        one, and goes on once every save has ended."""
        self.runner.start([assignment("ck1"), assignment("plain")])
        saved = self.runner.save_checkpoints()
        attempt = self.attempts["ck1"]
        assert isinstance(attempt, CheckpointingAttempt)
        [save] = attempt.saves
        self.assertNoResult(saved)
        save.callback(None)
        self.successResultOf(saved)
