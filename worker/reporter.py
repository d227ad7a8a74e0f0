"""Reporting results to the coordinator: together when they can be, each logged or counted.

Results that end while another Work Result is on its way go together in the next
(:class:`~xwch.batching.Coalescer`); while attempts wait to run, a result may also wait (at most
``REPORT_LINGER``) for the next to end. A Work Result that frees slots carries the Work Request
for them, so the coordinator may answer it with the next tasks. Each result gets a log line,
but successes past ``SUCCESSES_TOLD`` a period are told together.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from xwch.batching import Coalescer
from xwch.errors import ApiError
from xwch.protocol.codec import ProtocolError
from xwch.protocol.wire import OUTCOME_SUCCEEDED
from xwch.protocol.worker import AttemptResult

from .link import ResultsAnswer, Tasks, WorkAsk


class ResultsLink(Protocol):
    """The Work Result messages (a :class:`CoordinatorLink`)."""

    async def send_results(
        self, results: Sequence[AttemptResult], work: WorkAsk | None
    ) -> ResultsAnswer: ...


class WorkTaker(Protocol):
    """What a Work Result carrying a Work Request needs of the pull loop."""

    def work_to_ask(self, freed: int) -> WorkAsk | None:
        """The work a result freeing ``freed`` slots may ask for (theirs included); None: none."""

    def asking_for(self, slots: int) -> AbstractContextManager[None]:
        """Counts ``slots`` as asked for while the request is unanswered."""

    def take_work(self, tasks: Tasks) -> None:
        """Start the tasks the answer assigned."""


@dataclass(frozen=True)
class _Report:
    """A Work Result waiting to be sent."""

    result: AttemptResult
    # The attempt was held (counted in the worker's room) until the result is answered.
    frees_slot: bool


class ResultReporter:
    """Sends the worker's results through ``link``; never drops one."""

    log = Logger()

    # How long a result may wait for others to go in the same Work Result, while the worker
    # still has attempts waiting to run (it never waits when a slot would go idle).
    REPORT_LINGER = 0.05
    # Successes get a line each, up to SUCCESSES_TOLD a period, then one line for the rest at
    # the period's end: on tasks of milliseconds, a line per attempt would be hundreds of lines
    # a second (gigabytes of log a day, and a tenth of the worker's CPU). Failures always get
    # their own line.
    SUCCESSES_TOLD = 10
    SUCCESS_PERIOD = 60.0

    def __init__(self, reactor: IReactorTime, link: ResultsLink, pull: WorkTaker) -> None:
        self._reactor = reactor
        self._link = link
        self._pull = pull
        self._results: Coalescer[_Report] = Coalescer(self._send_reports)
        self._linger: IDelayedCall | None = None
        self._stopping = False
        # Successes told and untold in the current period (see SUCCESSES_TOLD).
        self._successes_told = 0
        self._successes_untold = 0
        self._successes_period: IDelayedCall | None = None

    @property
    def waiting(self) -> int:
        """Results waiting to be sent."""
        return self._results.waiting

    async def report(
        self, result: AttemptResult, frees_slot: bool = False, hold: bool = False
    ) -> None:
        """Work Result, retried until the coordinator answers: a result is never dropped.

        ``frees_slot``: the attempt was held, and makes room once this is answered; the result
        then carries a Work Request for that room (and any other). ``hold``: wait (at most
        REPORT_LINGER) for the next result, to go with it; the worker holds results only while
        attempts wait to run: fewer requests, and the slots are busy meanwhile.
        """
        sent = self._results.submit([_Report(result, frees_slot)], hold=hold)
        if hold and self._linger is None:
            self._linger = self._reactor.callLater(self.REPORT_LINGER, self._end_linger)
        await sent

    def flush(self) -> None:
        """Send the results that wait now: nothing is left to run once these end."""
        self._results.flush()

    def stop(self) -> None:
        """The worker is stopping: say the successes untold, send what waits."""
        self._stopping = True
        if self._successes_period is not None:
            self._successes_period.cancel()
            self._tell_successes()
        if self._linger is not None:
            self._linger.cancel()
            self._end_linger()

    def _end_linger(self) -> None:
        self._linger = None
        self._results.flush()

    async def _send_reports(self, reports: list[_Report]) -> None:
        # Together even if only one: the coordinator then assigns the work they ask for at
        # once, in the results' commit, whatever becomes of the results.
        freed = sum(1 for r in reports if r.frees_slot)
        work = self._pull.work_to_ask(freed) if freed else None
        try:
            with self._pull.asking_for(work.slots if work else 0):
                answer = await self._link.send_results([r.result for r in reports], work)
        except (ApiError, ProtocolError) as e:
            # An answer, not a silence (the link retries those): the coordinator refused the
            # whole request, which it does only when one result is malformed. Each alone, so
            # that one does not sink the others.
            if len(reports) == 1:
                self._log_result(reports[0].result, False, str(e))
                return
            self.log.warn("results refused together ({error}); sending each alone", error=e)
            for report in reports:
                await self._send_reports([report])
            return
        self._take(answer)
        for report, verdict in zip(reports, answer.verdicts, strict=True):
            self._log_result(report.result, verdict.accepted, verdict.refused)

    def _take(self, answer: ResultsAnswer) -> None:
        # No tasks (a coordinator too busy to assign): the pull loop sends a Work Request once
        # the slot is free.
        if answer.tasks is not None:
            self._pull.take_work(answer.tasks)

    def _log_result(self, result: AttemptResult, accepted: bool, refused: object) -> None:
        if refused is not None:
            self.log.warn(
                "the coordinator refused the result of attempt {attempt}: {error}",
                attempt=result.attempt,
                error=refused,
            )
            return
        if accepted and result.outcome == OUTCOME_SUCCEEDED and not self._stopping:
            if self._successes_told >= self.SUCCESSES_TOLD:
                self._successes_untold += 1
                return
            self._successes_told += 1
            if self._successes_period is None:
                self._successes_period = self._reactor.callLater(
                    self.SUCCESS_PERIOD, self._tell_successes
                )
        self.log.info(
            "attempt {attempt} {outcome}{error}, result {taken}",
            attempt=result.attempt,
            outcome=result.outcome,
            error=f" ({result.error})" if result.error else "",
            taken="accepted" if accepted else "ignored by the coordinator",
        )

    def _tell_successes(self) -> None:
        """End of a period: say how many successes went untold, start counting afresh."""
        self._successes_period = None
        untold, self._successes_untold = self._successes_untold, 0
        self._successes_told = 0
        if untold:
            self.log.info(
                "{count} more attempts succeeded in the last {seconds:.0f} s, results accepted",
                count=untold,
                seconds=self.SUCCESS_PERIOD,
            )
