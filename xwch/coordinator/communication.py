"""The communication manager: the transfer policy every sender applies, and admission control.

This first version publishes a fixed policy (packet size, sleep between packets, concurrent
transfers) and bounds how many Work Requests the coordinator serves at once; beyond the bound a
caller is told to retry after a short, jittered delay rather than queued without limit. Sensing
the network load and adapting the policy to it builds on this.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from xwch.errors import XwchError
from xwch.protocol import Policy


class Busy(XwchError):
    """Too many requests are being served; retry after ``retry_after`` seconds."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many {what} at once; retry after {retry_after:.1f} s")


class CommunicationManager:
    """Publishes the transfer policy and admits requests up to the current limits."""

    DEFAULT_POLICY = Policy(packet_size=1024 * 1024, packet_sleep=0.0, max_transfers=4)
    MAX_WORK_REQUESTS = 64
    RETRY_AFTER = 1.0

    def __init__(self, policy: Policy | None = None, rng: random.Random | None = None) -> None:
        self._policy = policy or self.DEFAULT_POLICY
        self._rng = rng or random.Random()
        self.max_work_requests = self.MAX_WORK_REQUESTS
        self.work_requests_in_flight = 0

    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy

    @contextmanager
    def admit_work_request(self) -> Iterator[None]:
        """Serve one Work Request, or raise :class:`Busy` when at the limit."""
        if self.work_requests_in_flight >= self.max_work_requests:
            # Jitter spreads the retries of many refused workers over time.
            raise Busy("work requests", self.RETRY_AFTER * (1 + self._rng.random()))
        self.work_requests_in_flight += 1
        try:
            yield
        finally:
            self.work_requests_in_flight -= 1

    def status(self) -> dict[str, object]:
        return {
            "policy": self._policy.to_json(),
            "max_work_requests": self.max_work_requests,
            "work_requests_in_flight": self.work_requests_in_flight,
        }
