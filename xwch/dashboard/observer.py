"""What the workers' signals tell the dashboard and the metrics, seen where they arrive.

The dashboard reads the platform through the API: rather than reach into the workers' and
tasks' managers, :class:`SignalObserver` wraps the handlers of the workers' routes and looks at
each signal and its answer as they pass: attempts handed out and reported, Work Alives
(heartbeats, suspended attempts, traffic). A signal the handler refuses is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from xwch.coordinator.web import ApiRequest, Handler, Route
from xwch.dashboard.metrics import CoordinatorMetrics
from xwch.dashboard.traffic import TrafficHistory
from xwch.protocol.wire import OUTCOME_SUCCEEDED
from xwch.protocol.worker import ResultsAnswer, ResultsReport, WorkAlive, WorkAnswer


@dataclass
class WorkerSignals:
    """A worker's Work Alives as this coordinator received them."""

    heartbeats: int = 0
    # Attempts the worker reported suspended in its last Work Alive: it suspends them all when
    # its owner's preferences say so (back at the keyboard, out of hours, a busy CPU).
    suspended: int = 0


class SignalObserver:
    """Wraps the workers' routes; counts into the metrics, keeps what the pages show."""

    def __init__(
        self,
        metrics: CoordinatorMetrics,
        traffic: TrafficHistory,
        site_of_worker: Callable[[str], str | None],
    ) -> None:
        self._metrics = metrics
        self._traffic = traffic
        self._site_of_worker = site_of_worker
        self.workers: dict[str, WorkerSignals] = {}
        # Raised at every signal that changes what the pages show (work handed out, results,
        # a worker suspended or resumed, a job submitted, cancelled or retried): comparing it
        # costs nothing, where counting tasks by state costs a pass over every task.
        self.changes = 0
        self.suspended_workers = 0

    def wrap(self, routes: Sequence[Route]) -> list[Route]:
        watched: dict[tuple[str, str], Callable[[ApiRequest, Any], None]] = {
            ("POST", "/workers/{worker}/work"): self._work_answered,
            ("POST", "/workers/{worker}/alive"): self._alive,
            ("POST", "/workers/{worker}/results"): self._results,
            ("POST", "/workers"): self._changed,
            ("POST", "/jobs"): self._changed,
            ("POST", "/jobs/{job}/cancel"): self._changed,
            ("POST", "/jobs/{job}/retry"): self._changed,
        }
        wrapped = []
        for route in routes:
            seen = watched.get((route.method, route.pattern))
            wrapped.append(route if seen is None else replace(route, handler=_after(route, seen)))
        return wrapped

    def _changed(self, req: ApiRequest, answer: Any) -> None:
        self.changes += 1

    def _work_answered(self, req: ApiRequest, answer: Any) -> None:
        if isinstance(answer, WorkAnswer) and answer.tasks:
            self._metrics.attempts_started.inc(len(answer.tasks))
            self.changes += 1

    def _alive(self, req: ApiRequest, answer: Any) -> None:
        alive: WorkAlive = req.body
        worker_id = req.params["worker"]
        signals = self.workers.setdefault(worker_id, WorkerSignals())
        signals.heartbeats += 1
        suspended = sum(1 for a in alive.running if a.state == "suspended")
        if bool(suspended) != bool(signals.suspended):
            self.suspended_workers += 1 if suspended else -1
            self.changes += 1
        signals.suspended = suspended
        if alive.transfers is None:
            return
        site = self._site_of_worker(worker_id)
        self._traffic.worker_report(site, alive.transfers)
        sent = sum(p.sent for p in alive.transfers.peers.values())
        received = sum(p.received for p in alive.transfers.peers.values())
        label = site or "default"
        if sent:
            self._metrics.transfer_bytes.labels("upload", label).inc(sent)
        if received:
            self._metrics.transfer_bytes.labels("download", label).inc(received)

    def _results(self, req: ApiRequest, answer: Any) -> None:
        report: ResultsReport = req.body
        if not isinstance(answer, ResultsAnswer):
            return
        self.changes += 1
        for result, taken in zip(report.results, answer.results, strict=False):
            if result.outcome == OUTCOME_SUCCEEDED:
                if taken.accepted:
                    self._metrics.attempts_succeeded.inc()
            elif taken.error is None:
                self._metrics.attempts_failed.inc()
        if answer.tasks:
            self._metrics.attempts_started.inc(len(answer.tasks))


def _after(route: Route, seen: Callable[[ApiRequest, Any], None]) -> Handler:
    handler = route.handler

    async def observed(req: ApiRequest) -> tuple[int, Any]:
        status, answer = await handler(req)
        seen(req, answer)
        return status, answer

    return observed
