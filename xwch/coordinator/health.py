"""Which workers to trust: a worker whose attempts keep failing while others succeed is
quarantined for a cooldown, so one broken machine cannot burn every task's retries."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


@dataclass
class _Record:
    consecutive_failures: int = 0
    last_success: float | None = None
    quarantined_until: float = 0.0


class WorkerHealth:
    """Counts each worker's outcomes and decides quarantines."""

    log = Logger()

    # Five failures in a row is past bad luck with one poison task (which fails on at most
    # TasksManager.POISON_WORKERS workers before it is failed for good).
    QUARANTINE_AFTER = 5
    QUARANTINE_COOLDOWN = 600.0
    # "While other workers succeed": another worker succeeded within this window.
    OTHERS_SUCCEEDED_WITHIN = 3600.0

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._records: dict[str, _Record] = {}
        self.quarantines = 0

    def _record(self, worker_id: str) -> _Record:
        return self._records.setdefault(worker_id, _Record())

    def succeeded(self, worker_id: str) -> None:
        record = self._record(worker_id)
        record.consecutive_failures = 0
        record.last_success = self._reactor.seconds()

    def _others_succeeded(self, worker_id: str, now: float) -> bool:
        since = now - self.OTHERS_SUCCEEDED_WITHIN
        return any(
            r.last_success is not None and r.last_success >= since
            for w, r in self._records.items()
            if w != worker_id
        )

    def failed(self, worker_id: str) -> None:
        record = self._record(worker_id)
        record.consecutive_failures += 1
        now = self._reactor.seconds()
        if record.consecutive_failures >= self.QUARANTINE_AFTER and self._others_succeeded(
            worker_id, now
        ):
            record.quarantined_until = now + self.QUARANTINE_COOLDOWN
            record.consecutive_failures = 0
            self.quarantines += 1
            self.log.warn(
                "worker {worker} quarantined for {cooldown:.0f} s: its attempts keep failing "
                "while other workers succeed",
                worker=worker_id,
                cooldown=self.QUARANTINE_COOLDOWN,
            )

    def is_quarantined(self, worker_id: str) -> bool:
        record = self._records.get(worker_id)
        return record is not None and self._reactor.seconds() < record.quarantined_until

    def forget(self, worker_id: str) -> None:
        self._records.pop(worker_id, None)
