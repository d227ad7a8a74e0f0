"""Work Alive: every ``alive_interval`` the worker tells the coordinator what it holds.

The coordinator declares a worker lost after a few beats missed, and answers each with the
attempts it no longer wants run (``cancel``). A Work Alive that fails is not retried: the next
tick is the retry. Each beat says whether the worker is suspended, and why; a suspension or a
resumption is told at once (:meth:`AliveBeat.beat_now`), not a period later, so that users see
the worker's true state.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.errors import ApiError, Unreachable
from xwch.protocol.codec import ProtocolError
from xwch.protocol.worker import RunningAttempt, TransfersReport

from .attempts import HeldAttempt
from .link import WorkerLost


class EvictionLog(Protocol):
    """Objects dropped from the cache, to tell the coordinator in the next Work Alive."""

    def take_evicted(self) -> list[str]: ...

    def restore_evicted(self, digests: Sequence[str]) -> None: ...


class AliveLink(Protocol):
    """The Work Alive message (a :class:`CoordinatorLink`)."""

    lost: bool

    async def alive(
        self,
        running: Sequence[RunningAttempt],
        evicted: Sequence[str],
        transfers: TransfersReport | None,
        waiting: Sequence[str] = (),
        suspended: str | None = None,
    ) -> list[str]: ...


class AliveBeat:
    """Sends a Work Alive every period through ``link``; ``drop``s what the answer cancels.

    ``held``: the attempts to list; ``evictions``: the cache's evictions to tell (optional);
    ``transfers``: this worker's transfers since the last beat (optional); ``in_background``:
    how the service runs a beat (logged if it fails, awaited at shutdown); ``suspended``: why
    the worker computes nothing now (None: it computes).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        link: AliveLink,
        held: Callable[[], list[HeldAttempt]],
        drop: Callable[[str, str], None],
        in_background: Callable[[Coroutine[Any, Any, None], str], Deferred[None]],
        evictions: EvictionLog | None = None,
        transfers: Callable[[], TransfersReport] | None = None,
        suspended: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._suspended = suspended
        self._link = link
        self._held = held
        self._drop = drop
        self._in_background = in_background
        self._evictions = evictions
        self._transfers = transfers
        self._loop: LoopingCall | None = None

    def start(self, interval: float) -> None:
        """Beat every ``interval`` seconds from now on (a new registration's period)."""
        self.stop()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        done = self._loop.start(interval, now=False)
        # _tick never fails; this only keeps the loop's own Deferred observed.
        done.addErrback(self._loop_failed)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def beat_now(self) -> None:
        """One Work Alive now, besides the periodic ones (the worker suspended or resumed);
        nothing before the first registration, which carries the state itself."""
        if self._loop is not None and self._loop.running:
            self._tick()

    def _loop_failed(self, failure: Failure) -> None:
        self.log.failure("the work alive loop failed", failure)

    def _tick(self) -> Deferred[None]:
        return self._in_background(self._send(), "work alive")

    async def _send(self) -> None:
        if self._link.lost:
            return
        held = self._held()
        running = [
            RunningAttempt(h.attempt, "suspended" if h.state == "suspended" else "running")
            for h in held
        ]
        # Held ahead, not started: their tasks are "assigned" for users, not "running".
        waiting = [h.attempt for h in held if h.state == "waiting"]
        # Optional: lets the coordinator's catalog forget what this worker no longer caches.
        evicted = self._evictions.take_evicted() if self._evictions is not None else []
        # Optional: this worker's transfers since the last WA, for the coordinator's load estimate.
        transfers = self._transfers() if self._transfers is not None else None
        try:
            cancel = await self._link.alive(running, evicted, transfers, waiting, self._suspended())
        except (Unreachable, ApiError, ProtocolError, WorkerLost) as e:
            if self._evictions is not None:
                self._evictions.restore_evicted(evicted)
            if not isinstance(e, WorkerLost):
                # The next tick tries again; a coordinator that hears nothing for long enough
                # declares us lost, and we register again.
                self.log.warn("work alive failed: {error}", error=e)
            return
        for attempt_id in cancel:
            self._drop(attempt_id, "cancelled by the coordinator")
