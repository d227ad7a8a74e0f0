"""Storing an attempt's outputs: where they go, and what a warehouse that never takes them does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_worker_service import TOP_OF_EACH_STEP, FakeAttempt, assignment
from xwch.errors import Unreachable
from xwch.protocol.objects import ObjectRef
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import AttemptResult
from xwch.worker.executor import CompletedAttempt
from xwch.worker.link import UploadPlan
from xwch.worker.uploader import OutputUploader


class FakePlanner:
    """Plans every object to one warehouse, none of them present there."""

    def __init__(self) -> None:
        self.plans: list[list[str]] = []

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan:
        self.plans.append([r.digest for r in refs])
        return UploadPlan("http://wh:1", [(r.digest, f"put:{r.digest}") for r in refs])


class OutputUploaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.planner = FakePlanner()
        self.stored: list[tuple[str, str]] = []
        self.refusing = False

    async def store_object(self, url: str, digest: str, size: int, path: Path, cap: str) -> None:
        if self.refusing:
            raise Unreachable("connection refused")
        self.stored.append((url, digest))

    def completed(self) -> CompletedAttempt:
        attempt = FakeAttempt(assignment("a1"))
        out = attempt.succeed()
        completed: CompletedAttempt = self.successResultOf(Deferred.fromCoroutine(attempt.run()))
        self.assertEqual(completed.result.outputs, (out,))
        return completed

    def store(self, completed: CompletedAttempt) -> Deferred[AttemptResult]:
        uploader = OutputUploader(self.clock, self.planner, self.store_object, TOP_OF_EACH_STEP)
        return Deferred.fromCoroutine(uploader.store(completed))

    def test_outputs_go_where_the_plan_says(self) -> None:
        completed = self.completed()
        result = self.successResultOf(self.store(completed))
        self.assertEqual(result.outcome, OUTCOME_SUCCEEDED)
        [digest] = completed.files
        self.assertEqual(self.stored, [("http://wh:1", digest)])

    def test_outputs_never_stored_make_the_attempt_fail(self) -> None:
        """After STORE_TRIES plans, each after a longer wait, the result is a failure that
        says why, so the task runs elsewhere."""
        self.refusing = True
        d = self.store(self.completed())
        self.clock.pump([TOP_OF_EACH_STEP(n) for n in range(OutputUploader.STORE_TRIES - 1)])
        result = self.successResultOf(d)
        self.assertEqual(result.outcome, OUTCOME_FAILED)
        self.assertIn("cannot store the outputs", result.error or "")
        self.assertEqual(len(self.planner.plans), OutputUploader.STORE_TRIES)
        self.flushLoggedErrors()
