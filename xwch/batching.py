"""Send many small reports as few requests: what arrives while one is in flight goes in the next.

A warehouse tells the coordinator of every object it stores. On short tasks that is a request per
output, and each costs both sides far more than the few bytes it carries. A :class:`Coalescer`
keeps at most one request in flight: a report made while it is unanswered waits, with every
other made meanwhile, for the next request, which carries them all. Alone, a report goes at
once, so batching adds no delay where there is no load; under load the batches grow by
themselves. Each caller learns the fate of the request that carried its items. A caller that
knows more will come soon may also hold its items for the next call (``hold``), sent once
someone submits without holding or calls :meth:`Coalescer.flush`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Calls ``send(items)`` with the items of every :meth:`submit` waiting, one call at a time.

    ``most``: the most items one call carries (whole submissions: one bigger than that goes
    alone).
    """

    def __init__(self, send: Callable[[list[T]], Awaitable[object]], most: int = 1000) -> None:
        self._send = send
        self._most = most
        self._waiting: deque[tuple[Sequence[T], Deferred[None]]] = deque()
        self._sending = False

    @property
    def waiting(self) -> int:
        """Items submitted and not sent yet."""
        return sum(len(items) for items, _done in self._waiting)

    async def submit(self, items: Sequence[T], hold: bool = False) -> None:
        """Fires once the call carrying ``items`` has succeeded; fails as it failed.

        ``hold``: do not start a call for them; they go with the next one (see :meth:`flush`).
        """
        done: Deferred[None] = Deferred()
        self._waiting.append((items, done))
        if not self._sending and not hold:
            self._send_next()
        await done

    def flush(self) -> None:
        """Send what waits now, or right after the call on its way."""
        if self._waiting and not self._sending:
            self._send_next()

    def _send_next(self) -> None:
        batch: list[tuple[Sequence[T], Deferred[None]]] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0][0]) <= self._most):
            entry = self._waiting.popleft()
            batch.append(entry)
            count += len(entry[0])
        self._sending = True
        items = [item for entry, _done in batch for item in entry]
        sent = Deferred.fromCoroutine(self._call(items))
        sent.addBoth(self._sent, [done for _items, done in batch])

    async def _call(self, items: list[T]) -> None:
        await self._send(items)

    def _sent(self, outcome: Failure | None, waiters: list[Deferred[None]]) -> None:
        self._sending = False
        # The callers first: what they do on hearing (free a slot, submit again) is then seen
        # by the next call.
        for done in waiters:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(None)
        if self._waiting and not self._sending:
            self._send_next()
