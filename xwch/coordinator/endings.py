"""Callers waiting for a job to end (``GET /jobs/{job}?wait=S``).

``xwch-client wait`` and ``submit --wait`` used to poll a job, sooner as its end drew near; they
still learned of the end up to 50 ms late, plus a poll's round trip. A poll may now say how long
it is willing to wait: the answer comes when the job ends, or when that time is over (the
follower redraws its progress then and asks again).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from xwch.coordinator.web import Caller


class JobEndings:
    """Deferreds of callers waiting for jobs to end, by job."""

    # The longest a caller may wait, whatever it asks: well under the 60 s after which our
    # HTTP client gives up on an answer.
    MAX_WAIT = 30.0

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._waiting: dict[str, list[Deferred[None]]] = {}

    def waiting(self, job_id: str) -> int:
        return len(self._waiting.get(job_id, ()))

    def wait(self, job_id: str, seconds: float, caller: Caller) -> Deferred[None]:
        """Fires when :meth:`ended` is called for ``job_id``, after ``seconds`` (at most
        MAX_WAIT), or when the caller hangs up, whichever comes first."""
        done: Deferred[None] = Deferred()
        waiters = self._waiting.setdefault(job_id, [])
        waiters.append(done)
        timer = self._reactor.callLater(min(seconds, self.MAX_WAIT), self._stop, job_id, done)
        caller.when_gone().addCallback(lambda _: self._stop(job_id, done))

        def forget(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(forget)
        return done

    def ended(self, job_id: str) -> None:
        """The job's end is committed to the store: answer whoever waits for it."""
        for done in self._waiting.pop(job_id, []):
            done.callback(None)

    def close(self) -> None:
        """The coordinator is stopping: answer everyone now."""
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for done in waiters:
                done.callback(None)

    def _stop(self, job_id: str, done: Deferred[None]) -> None:
        waiters = self._waiting.get(job_id)
        if waiters is None or done not in waiters:
            return
        waiters.remove(done)
        if not waiters:
            del self._waiting[job_id]
        done.callback(None)
