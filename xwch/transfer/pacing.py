"""How long a sender waits before its next packet: the policy's sleep and the volunteer's cap.

The communication manager sets a sleep between two packets; a volunteer may also cap the rate
of their machine. The cap is a token bucket that starts empty and holds at most one packet's
worth of bytes: a packet leaves once the cap has earned its bytes, so the rate is smooth
(no burst after a pause longer than one packet) and the time a packet spends on the wire counts
towards the next one (so a transfer gets the whole cap, not the cap minus the network time).

The bucket is kept as the virtual time at which it is empty (``_empty_at``), reserved packet by
packet, so several transfers sharing one pacer still hold the cap together.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from xwch.protocol import Policy


class PacketPacer:
    """Tells each sender how long to wait before its next packet."""

    def __init__(self, policy: Policy, rate_cap: float | None, reactor: IReactorTime) -> None:
        if rate_cap is not None and not rate_cap > 0:
            raise ValueError("rate cap must be a positive number of bytes per second")
        self._policy = policy
        self._rate_cap = rate_cap
        self._reactor = reactor
        self._empty_at = reactor.seconds()
        self._paced_one = False

    @property
    def policy(self) -> Policy:
        """The policy in force; senders read ``packet_size`` from it before each packet."""
        return self._policy

    @property
    def rate_cap(self) -> float | None:
        return self._rate_cap

    def update(self, policy: Policy) -> None:
        """Apply a new policy from the coordinator, from the next packet on."""
        self._policy = policy

    def set_rate_cap(self, rate_cap: float | None) -> None:
        """Change the volunteer's cap (bytes per second, None for none), from the next packet on."""
        if rate_cap is not None and not rate_cap > 0:
            raise ValueError("rate cap must be a positive number of bytes per second")
        self._rate_cap = rate_cap
        self._empty_at = self._reactor.seconds()

    def delay_before(self, size: int) -> float:
        """Seconds to wait before sending a packet of ``size`` bytes, which it reserves."""
        now = self._reactor.seconds()
        # The sleep is between two packets: the first one does not wait for it.
        sleep = self._policy.packet_sleep if self._paced_one else 0.0
        self._paced_one = True
        return max(sleep, self._cap_delay(size, now), 0.0)

    def _cap_delay(self, size: int, now: float) -> float:
        if self._rate_cap is None:
            return 0.0
        burst = max(self._policy.packet_size, size)
        # A bucket idle long enough is full: at most one packet of credit.
        start = max(self._empty_at, now - burst / self._rate_cap)
        self._empty_at = start + size / self._rate_cap
        return self._empty_at - now
