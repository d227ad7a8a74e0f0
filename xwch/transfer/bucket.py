"""A rate cap as a token bucket that holds at most one packet's worth of bytes.

The bucket is kept as the virtual time at which it is empty (``_empty_at``), reserved chunk by
chunk: a chunk leaves once the cap has earned its bytes, so the rate is smooth (no burst after a
pause longer than one chunk), and the time a chunk spends on the wire counts towards the next
one (a sender gets the whole cap, not the cap minus the network time). Several senders sharing
one bucket hold the cap together.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


def check_rate(rate: float | None) -> float | None:
    """``rate`` if it is None (no cap) or a positive number of bytes per second."""
    if rate is not None and not rate > 0:
        raise ValueError("a rate cap must be a positive number of bytes per second")
    return rate


class TokenBucket:
    """Tells a sender how long to wait before ``size`` more bytes, under ``rate`` bytes/s."""

    def __init__(self, rate: float | None, reactor: IReactorTime) -> None:
        self._rate = check_rate(rate)
        self._reactor = reactor
        self._empty_at = reactor.seconds()

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """A new cap (None: none), from the next reservation on; the bucket starts empty."""
        self._rate = check_rate(rate)
        self._empty_at = self._reactor.seconds()

    def reserve(self, size: int, burst: int) -> float:
        """Seconds to wait before sending ``size`` bytes, which this call reserves.

        ``burst`` is what a bucket idle for long may hold: one packet (or chunk), no more.
        """
        if self._rate is None:
            return 0.0
        now = self._reactor.seconds()
        burst = max(burst, size)
        # A bucket idle long enough is full: at most ``burst`` bytes of credit.
        start = max(self._empty_at, now - burst / self._rate)
        self._empty_at = start + size / self._rate
        return max(0.0, self._empty_at - now)
