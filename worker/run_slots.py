"""The worker's slots: how many attempts run their program at once, the others waiting in turn.

A worker may hold more attempts than it has slots (work fetched ahead, see
``WorkerService.work_ahead``): those wait here, first come first served, and start the moment a
slot is given back, without waiting for a round trip to the coordinator.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred


class SlotGate:
    """``size`` slots; :meth:`take` waits for one, :meth:`give_back` frees it for the next."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._taken = 0
        self._waiters: deque[Deferred[None]] = deque()

    @property
    def taken(self) -> int:
        return self._taken

    @property
    def waiting(self) -> int:
        """Callers of :meth:`take` still waiting (cancelled ones not counted)."""
        return sum(1 for w in self._waiters if not w.called)

    def take(self) -> Deferred[None]:
        """Fires once a slot is this caller's; cancelling it gives up the wait (and no slot)."""
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        self._hand_out()
        return waiter

    def give_back(self) -> None:
        """Free a slot taken with :meth:`take` (once per slot)."""
        if self._taken <= 0:
            raise RuntimeError("no slot to give back")
        self._taken -= 1
        self._hand_out()

    def resize(self, size: int) -> None:
        """``size`` slots from now on; above it, slots taken are freed as they are given back."""
        self._size = size
        self._hand_out()

    def _hand_out(self) -> None:
        while self._taken < self._size and self._waiters:
            waiter = self._waiters.popleft()
            if waiter.called:
                continue  # cancelled while waiting
            self._taken += 1
            waiter.callback(None)
