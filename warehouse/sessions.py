"""Admission control of transfer sessions: how many transfers a warehouse serves at once.

A session is one transfer of one object with one party, spanning its packets (each packet is
one request). The downloader or uploader names it in ``X-Xwch-Session``; a request without one
(a plain HTTP client) counts as a session of its peer's address, operation and object. A session
lives until its last packet, or until it is idle for :attr:`SessionTable.IDLE_TIMEOUT`.

Beyond the limit (from the coordinator's policy, sent in the heartbeat's answer) a new session is
refused with 503 busy and a jittered Retry-After; sessions already admitted go on. The table
never holds more than the limit: nothing queues without bound.
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime


class TooManySessions(Exception):
    """The warehouse serves as many transfers as it may; come back after ``retry_after``."""

    def __init__(self, active: int, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"this warehouse serves {active} transfers, its limit; retry after {retry_after:.1f} s"
        )


class SessionTable:
    """The sessions in progress, each with the time it was last heard of."""

    # Until the coordinator's first policy: 32 sessions (a 1 Gbit/s link gives each ~4 MB/s).
    DEFAULT_LIMIT = 32
    # Longer than the longest sleep between two packets (the delay controller's 1 s plus the
    # policy's sleep) with room for a retry: a session silent this long has ended or died.
    IDLE_TIMEOUT = 15.0
    # Retry-After base for a refused session, drawn in [1, 2] times it: a transfer of a few
    # seconds frees a slot, and refused callers come back spread out.
    RETRY_AFTER = 2.0

    def __init__(
        self,
        clock: IReactorTime,
        limit: int = DEFAULT_LIMIT,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._clock = clock
        self.limit = max(1, limit)
        self._random = random
        # session key -> last heard; least recently heard first.
        self._sessions: OrderedDict[str, float] = OrderedDict()
        self.admitted = 0
        self.refused = 0

    def set_limit(self, limit: int) -> None:
        """A new limit: sessions already admitted go on; new ones wait until under it."""
        self.limit = max(1, limit)

    def active(self) -> int:
        self._expire(self._clock.seconds())
        return len(self._sessions)

    def admit(self, key: str) -> None:
        """Count a request of session ``key``; TooManySessions if it is new and none is free."""
        now = self._clock.seconds()
        if key in self._sessions:
            self._sessions[key] = now
            self._sessions.move_to_end(key)
            return
        self._expire(now)
        if len(self._sessions) >= self.limit:
            self.refused += 1
            raise TooManySessions(len(self._sessions), self.RETRY_AFTER * (1.0 + self._random()))
        self._sessions[key] = now
        self.admitted += 1

    def finish(self, key: str) -> None:
        """The session's last packet is served: its slot is free."""
        self._sessions.pop(key, None)

    def status(self) -> dict[str, int]:
        return {"active": self.active(), "limit": self.limit, "refused": self.refused}

    def _expire(self, now: float) -> None:
        while self._sessions:
            key, heard = next(iter(self._sessions.items()))
            if now - heard <= self.IDLE_TIMEOUT:
                break
            del self._sessions[key]
