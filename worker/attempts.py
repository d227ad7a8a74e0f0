"""The attempts a worker holds: what one is, and the states it goes through.

An attempt is held from its assignment until its result is answered (or it is dropped)::

    WAITING_FOR_SLOT -> RUNNING -> REPORTING -> SENDING
            \\              \\           \\           \\
             +--------------+-----------+-----------+--> DROPPED

WAITING_FOR_SLOT only when work was fetched ahead (see :mod:`xwch.worker.run_slots`); REPORTING
while its outputs are stored; SENDING while its Work Result is on its way, its slot already free
for the next. DROPPED: killed on the coordinator's word, given back, or stopped; its result is
not reported.
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from xwch.protocol.worker import Assignment

from .executor import CompletedAttempt


class Attempt(Protocol):
    """One assignment being run (:class:`AttemptExecutor`, or a fake in tests)."""

    assignment: Assignment

    def run(self) -> Coroutine[Any, Any, CompletedAttempt]: ...

    def kill(self) -> None: ...

    def discard(self) -> Deferred[None]:
        """Remove what the attempt left on disk; fires once done (fails with OSError)."""

    def suspend(self) -> None:
        """Stop the attempt's processes where they are (and start none) until resumed."""

    def resume(self) -> None: ...


class AttemptState(enum.Enum):
    WAITING_FOR_SLOT = "waiting"
    RUNNING = "running"
    # Its program has ended; its outputs are being stored.
    REPORTING = "reporting"
    # Its Work Result is on its way: only stopping cuts it short (see AttemptRunner.drop).
    SENDING = "sending"
    # Its result is not reported.
    DROPPED = "dropped"


_NEXT = {
    AttemptState.WAITING_FOR_SLOT: {AttemptState.RUNNING, AttemptState.DROPPED},
    AttemptState.RUNNING: {AttemptState.REPORTING, AttemptState.DROPPED},
    AttemptState.REPORTING: {AttemptState.SENDING, AttemptState.DROPPED},
    AttemptState.SENDING: {AttemptState.DROPPED},
    AttemptState.DROPPED: set(),
}


class IllegalTransition(Exception):
    """A bug: an attempt asked to go to a state it cannot reach from its own."""


@dataclass(frozen=True)
class HeldAttempt:
    """An attempt this worker holds, as ``xwch-worker status`` shows it."""

    attempt: str
    job: str
    task: str
    # "waiting" (for a slot), "running", "suspended" or "reporting".
    state: str


class Held:
    """An attempt from its assignment until its result is reported (or it is dropped)."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.state = AttemptState.WAITING_FOR_SLOT
        # Its whole life in the worker (see AttemptRunner._attempt_life): cancelled to cut
        # short the storing or the sending of its result.
        self.life: Deferred[None] | None = None
        # While WAITING_FOR_SLOT: the slot it waits for, cancelled if it is dropped first.
        self.slot_wait: Deferred[None] | None = None

    @property
    def dropped(self) -> bool:
        return self.state is AttemptState.DROPPED

    @property
    def reporting(self) -> bool:
        """Its program has ended: storing its outputs, or sending its result."""
        return self.state in (AttemptState.REPORTING, AttemptState.SENDING)

    def move(self, to: AttemptState) -> AttemptState:
        """Go to state ``to``; the state it left."""
        was = self.state
        if to not in _NEXT[was]:
            raise IllegalTransition(f"attempt {self.attempt.assignment.attempt}: {was} -> {to}")
        self.state = to
        return was
