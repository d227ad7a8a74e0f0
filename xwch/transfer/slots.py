"""How many transfers run at once: the policy's ``max_transfers``, shared by one party's senders.

A transfer takes a slot before its first packet and gives it back after its last; beyond the
limit it waits its turn. The waiters are the party's own transfers (a worker's slots, a client's
command), so the queue is bounded by what the party itself started.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred


class TransferSlots:
    """A counting semaphore whose limit can change while transfers hold it."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self.active = 0
        self._waiting: deque[Deferred[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def set_limit(self, limit: int) -> None:
        """A new limit; lowering it lets running transfers finish, raising it starts waiters."""
        self._limit = max(1, limit)
        self._wake()

    async def acquire(self) -> None:
        if self.active < self._limit and not self._waiting:
            self.active += 1
            return
        waiter: Deferred[None] = Deferred(self._withdraw)
        self._waiting.append(waiter)
        await waiter

    def release(self) -> None:
        self.active = max(0, self.active - 1)
        self._wake()

    def _withdraw(self, waiter: Deferred[None]) -> None:
        # A transfer cancelled while waiting leaves the queue; it never held a slot.
        if waiter in self._waiting:
            self._waiting.remove(waiter)

    def _wake(self) -> None:
        while self._waiting and self.active < self._limit:
            self.active += 1
            self._waiting.popleft().callback(None)
