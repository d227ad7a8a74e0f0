"""The result reporter on its own: coalescing, the linger, the older coordinators' fallback."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xwch.errors import ApiError
from xwch.protocol import OUTCOME_FAILED, AttemptResult
from xwch.worker.link import ResultsAnswer, Tasks, Verdict, WorkAsk
from xwch.worker.reporter import ResultReporter


def failed(attempt: str) -> AttemptResult:
    return AttemptResult(attempt, OUTCOME_FAILED, error="exited with status 1")


class FakeLink:
    """Work Results answered when the test says; a coordinator from before batches refuses
    them with 400."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], WorkAsk | None]] = []
        self.singles: list[str] = []
        self.takes_batches = True
        self.refused_batches = 0
        self.pending: list[Deferred[None]] = []

    async def send_results(
        self, results: Sequence[AttemptResult], work: WorkAsk | None, batched: bool = True
    ) -> ResultsAnswer:
        if not batched:
            [result] = results
            self.singles.append(result.attempt)
            return ResultsAnswer([Verdict(True)], None)
        if not self.takes_batches:
            self.refused_batches += 1
            raise ApiError(400, "bad_request", "expected one result")
        self.batches.append(([r.attempt for r in results], work))
        answered: Deferred[None] = Deferred()
        self.pending.append(answered)
        await answered
        return ResultsAnswer([Verdict(True) for _ in results], [] if work else None)

    def answer(self) -> None:
        self.pending.pop(0).callback(None)


class FakePull:
    def __init__(self) -> None:
        self.asking = 0
        self.taken: list[Tasks] = []

    def work_to_ask(self, freed: int) -> WorkAsk | None:
        return WorkAsk(freed, freed)

    @contextmanager
    def asking_for(self, slots: int) -> Iterator[None]:
        self.asking += slots
        try:
            yield
        finally:
            self.asking -= slots

    def take_work(self, tasks: Tasks) -> None:
        self.taken.append(tasks)


class ResultReporterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.link = FakeLink()
        self.pull = FakePull()
        self.reporter = ResultReporter(self.clock, self.link, self.pull)

    def report(self, attempt: str, hold: bool = False) -> Deferred[None]:
        return Deferred.fromCoroutine(self.reporter.report(failed(attempt), True, hold))

    def test_results_ended_while_one_is_sent_go_together(self) -> None:
        """One Work Result at a time: those made meanwhile wait for it, then go as one, asking
        work for every slot they free."""
        first = self.report("a1")
        later = [self.report(a) for a in ("a2", "a3")]
        self.assertEqual(self.link.batches, [(["a1"], WorkAsk(1, 1))])
        self.assertEqual(self.pull.asking, 1)
        self.link.answer()
        self.successResultOf(first)
        self.assertEqual(self.link.batches[-1], (["a2", "a3"], WorkAsk(2, 2)))
        self.link.answer()
        for d in later:
            self.successResultOf(d)
        self.assertEqual(self.pull.asking, 0)
        self.assertEqual(len(self.pull.taken), 2)

    def test_a_held_result_goes_after_the_linger(self) -> None:
        d = self.report("a1", hold=True)
        self.assertEqual(self.link.batches, [])
        self.assertEqual(self.reporter.waiting, 1)
        self.clock.advance(ResultReporter.REPORT_LINGER)
        self.assertEqual(self.link.batches, [(["a1"], WorkAsk(1, 1))])
        self.link.answer()
        self.successResultOf(d)

    def test_a_held_result_goes_with_the_next_not_held(self) -> None:
        held = self.report("a1", hold=True)
        self.report("a2")
        self.assertEqual(self.link.batches, [(["a1", "a2"], WorkAsk(2, 2))])
        self.link.answer()
        self.successResultOf(held)

    def test_stopping_sends_what_lingers(self) -> None:
        self.report("a1", hold=True)
        self.reporter.stop()
        self.assertEqual([b for b, _ in self.link.batches], [["a1"]])

    def test_a_coordinator_from_before_batches_gets_results_one_by_one(self) -> None:
        """Older coordinators: a batch refused as malformed by a coordinator that never took one
        sends its results one by one, and every later result too."""
        self.link.takes_batches = False
        self.successResultOf(self.report("a1"))
        self.successResultOf(self.report("a2"))
        self.assertEqual(self.link.singles, ["a1", "a2"])
        self.assertEqual(self.link.refused_batches, 1)
        self.flushLoggedErrors()
