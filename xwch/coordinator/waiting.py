"""Work Requests that found no work, held open until some appears (long polling).

An idle worker used to ask again and again, at most every 2 s: the first task of a job submitted
to an idle platform waited up to that long, and a thousand idle workers made 500 requests a
second to learn that there was nothing to do. A Work Request may now say how long it is willing
to wait (``"wait"``); finding nothing, it waits here. When tasks become ready the tasks' manager
says so (:meth:`WorkWaitingRoom.work_appeared`) and, once that turn of the reactor is over (one
job brings many ready tasks at once), the waiting requests try again in the order they came,
each answered as soon as it gets work, the others left waiting. A request that waited its whole
time is answered with nothing, and its worker asks again.

A request that tries and finds nothing though tasks are ready (none it may run: another
platform, say) goes to the back of the line, and a pass stops after FRUITLESS_MOST of those,
the next starting shortly after: a thousand such workers never make one long pass.

Each worker has at most one request waiting: a newer one answers the older with nothing. A
request whose caller hangs up stops waiting; one answered while its caller was hanging up gives
its attempts back (see ``CoordinatorApi.work_request``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from xwch.coordinator.web import Caller
from xwch.protocol.worker import Assignment

# One more try at getting work for a waiting request: the scheduler's pick and its record.
TryAgain = Callable[[], Deferred[list[Assignment]]]


@dataclass(eq=False)
class _Waiting:
    """One Work Request held open."""

    worker_id: str
    try_again: TryAgain
    answer: Deferred[list[Assignment]] = field(default_factory=Deferred)
    timer: IDelayedCall | None = None
    # A try is on its way: its outcome is the answer if it found work or the wait is over.
    trying: bool = False
    # Work appeared while a try was on its way (too late for its pick): try once more.
    missed: bool = False
    # The wait is over (timed out, replaced, hung up, closing): the next outcome is final.
    over: bool = False


class WorkWaitingRoom:
    """The Work Requests waiting for work, by worker, oldest first."""

    # The longest a request may wait, whatever it asks: well under the 60 s after which our
    # HTTP client gives up on an answer.
    MAX_WAIT = 30.0
    # Tries finding nothing in one pass, at most, and the pause before the next pass.
    FRUITLESS_MOST = 64
    NEXT_PASS_DELAY = 0.01

    def __init__(self, reactor: IReactorTime, ready_count: Callable[[], int]) -> None:
        self._reactor = reactor
        self._ready_count = ready_count
        self._waiting: dict[str, _Waiting] = {}
        self._pass_due: IDelayedCall | None = None
        self._closed = False
        # Counts work_appeared(): a request that saw it change since its first try (made
        # before it came to wait here) may have missed work, and tries again at once.
        self.appeared = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(
        self,
        worker_id: str,
        seconds: float,
        try_again: TryAgain,
        caller: Caller,
        seen: int,
    ) -> Deferred[list[Assignment]]:
        """Fires with the attempts ``try_again`` gives once it gives some; with nothing after
        ``seconds`` (at most MAX_WAIT), when a newer request of the same worker comes, when the
        caller hangs up, or when the room closes. ``seen``: :attr:`appeared` at the first try."""
        waiting = _Waiting(worker_id, try_again)
        if self._closed or seconds <= 0:
            waiting.answer.callback([])
            return waiting.answer
        older = self._waiting.pop(worker_id, None)
        if older is not None:
            self._end(older)
        self._waiting[worker_id] = waiting
        waiting.timer = self._reactor.callLater(
            min(seconds, self.MAX_WAIT), self._timed_out, waiting
        )
        caller.when_gone().addCallback(lambda _: self._hung_up(waiting))
        if self.appeared != seen:
            self._try(waiting)
        return waiting.answer

    def waiting_workers(self) -> list[str]:
        """The workers with a Work Request waiting here."""
        return [w for w, waiting in self._waiting.items() if not waiting.over]

    def release(self, worker_ids: Iterable[str]) -> None:
        """Answer these workers' waiting requests now (with what a try on its way brings, or
        nothing): they were moved to another group and ask its holder next."""
        for worker_id in worker_ids:
            waiting = self._waiting.get(worker_id)
            if waiting is not None:
                self._end(waiting)

    def work_appeared(self) -> None:
        """Tasks became ready: the waiting requests try again at the end of this turn."""
        self.appeared += 1
        if self._pass_due is None and self._waiting:
            self._pass_due = self._reactor.callLater(0, self._try_all)

    def close(self) -> None:
        """The coordinator is stopping: answer every waiting request now, take no more."""
        self._closed = True
        if self._pass_due is not None and self._pass_due.active():
            self._pass_due.cancel()
        self._pass_due = None
        for waiting in list(self._waiting.values()):
            self._end(waiting)

    def _try_all(self) -> None:
        self._pass_due = None
        fruitless = 0
        for waiting in list(self._waiting.values()):
            # Nothing left to pick: the others would find nothing either.
            if not self._ready_count():
                return
            if waiting.trying:
                waiting.missed = True
                continue
            if waiting.over:
                continue
            self._try(waiting)
            if waiting.trying or waiting.over:
                continue  # recording what it got, or answered
            # Found nothing though tasks are ready (none it may run): to the back of the line.
            del self._waiting[waiting.worker_id]
            self._waiting[waiting.worker_id] = waiting
            fruitless += 1
            if fruitless >= self.FRUITLESS_MOST:
                # Many waiting workers that cannot take the ready tasks (another platform):
                # the rest are tried in a pass of their own, soon, so that no pass is long.
                self._pass_due = self._reactor.callLater(self.NEXT_PASS_DELAY, self._try_all)
                return

    def _try(self, waiting: _Waiting) -> None:
        waiting.trying = True
        waiting.missed = False
        waiting.try_again().addBoth(self._tried, waiting)

    def _tried(self, outcome: list[Assignment] | Failure, waiting: _Waiting) -> None:
        waiting.trying = False
        if isinstance(outcome, Failure) or outcome or waiting.over:
            self._forget(waiting)
            if isinstance(outcome, Failure):
                waiting.answer.errback(outcome)
            else:
                waiting.answer.callback(outcome)
        elif waiting.missed and self._ready_count():
            self._try(waiting)

    def _timed_out(self, waiting: _Waiting) -> None:
        waiting.timer = None
        self._end(waiting)

    def _hung_up(self, waiting: _Waiting) -> None:
        self._end(waiting)

    def _end(self, waiting: _Waiting) -> None:
        """The wait is over: answer nothing now, or what the try on its way brings."""
        if waiting.over:
            return
        waiting.over = True
        if waiting.trying:
            return
        self._forget(waiting)
        waiting.answer.callback([])

    def _forget(self, waiting: _Waiting) -> None:
        waiting.over = True
        if self._waiting.get(waiting.worker_id) is waiting:
            del self._waiting[waiting.worker_id]
        if waiting.timer is not None and waiting.timer.active():
            waiting.timer.cancel()
        waiting.timer = None
