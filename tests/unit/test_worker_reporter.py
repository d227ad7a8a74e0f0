"""The result reporter on its own: coalescing, the linger, a refused batch sent apart."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xwch.errors import ApiError
from xwch.protocol.wire import OUTCOME_FAILED
from xwch.protocol.worker import AttemptResult
from xwch.worker.link import ResultsAnswer, Tasks, Verdict, WorkAsk
from xwch.worker.reporter import ResultReporter


def failed(attempt: str) -> AttemptResult:
    return AttemptResult(attempt, OUTCOME_FAILED, error="exited with status 1")


class FakeLink:
    """Work Results answered when the test says; one naming a ``malformed`` attempt is refused
    whole with 400, as the coordinator refuses a request with a malformed result."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], WorkAsk | None]] = []
        self.malformed: set[str] = set()
        self.refused: list[list[str]] = []
        self.pending: list[Deferred[None]] = []

    async def send_results(
        self, results: Sequence[AttemptResult], work: WorkAsk | None
    ) -> ResultsAnswer:
        attempts = [r.attempt for r in results]
        if self.malformed & set(attempts):
            self.refused.append(attempts)
            raise ApiError(400, "bad_request", "report.results[0]: malformed")
        self.batches.append((attempts, work))
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

    def test_a_batch_refused_whole_is_sent_again_result_by_result(self) -> None:
        """A request refused whole (one malformed result) is sent again one result at a time:
        the others are taken, the malformed one alone is refused."""
        self.link.malformed = {"a2"}
        first = self.report("a1", hold=True)
        second = self.report("a2", hold=True)
        self.clock.advance(ResultReporter.REPORT_LINGER)
        self.assertEqual(self.link.refused, [["a1", "a2"]])
        self.assertEqual([b for b, _ in self.link.batches], [["a1"]])
        self.link.answer()
        self.assertEqual(self.link.refused, [["a1", "a2"], ["a2"]])
        self.successResultOf(first)
        self.successResultOf(second)
        self.flushLoggedErrors()
