"""Exponential backoff with jitter, for anything that retries a network call."""

from __future__ import annotations

import random as _random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``base`` up to ``cap``, each drawn in the upper half of its step.

    Half fixed, half random ("equal jitter"): retries never collapse to nothing, and many
    senders that failed together (a restarted coordinator) spread out instead of coming back
    at the same instant.
    """

    def __init__(
        self, base: float, cap: float, random: Callable[[], float] = _random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._random = random
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next try; each call counts one failed try."""
        step = min(self.cap, self.base * 2.0**self.attempts)
        self.attempts += 1
        return step / 2 + self._random() * step / 2

    def reset(self) -> None:
        """A try succeeded: start again from ``base``."""
        self.attempts = 0
