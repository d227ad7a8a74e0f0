"""What the worker runs in the background: each failure logged, all awaited when it stops.

The pull loop, each attempt's life, a result refused at once, a Work Alive, a giveback: none is
awaited by whoever starts it, so each goes through :meth:`BackgroundWork.run`, which logs its
failure and keeps it until it ends. Stopping then waits for what is left (:meth:`settled`): no
Deferred is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure


class BackgroundWork:
    """Coroutines run in the background until they end.

    ``stopping``: whether the owner is stopping (a cancellation is then expected, not logged);
    ``told``: errors whose message says it all, logged in one line without a traceback.
    """

    log = Logger()

    def __init__(
        self, stopping: Callable[[], bool], told: tuple[type[Exception], ...] = ()
    ) -> None:
        self._stopping = stopping
        self._told = told
        self._running: set[Deferred[None]] = set()

    def run(self, work: Coroutine[Any, Any, None], what: str) -> Deferred[None]:
        """Run ``work``; log its failure; keep it until it ends so stopping can wait for it."""
        d = Deferred.fromCoroutine(work)
        self._running.add(d)
        d.addErrback(self._log_failure, what)

        def forget(result: None) -> None:
            self._running.discard(d)
            return result

        d.addBoth(forget)
        return d

    def settled(self) -> Deferred[Any]:
        """Fires once all that runs now has ended, however it ended."""
        return DeferredList(list(self._running), consumeErrors=True)

    def _log_failure(self, failure: Failure, what: str) -> None:
        if failure.check(CancelledError) and self._stopping():
            return
        if failure.check(*self._told):
            self.log.error("{error}", error=failure.value)
            return
        self.log.failure("{what} failed", failure, what=what)
