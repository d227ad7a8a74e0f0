"""Whether anyone else's traffic crosses the home router's Internet side, by its byte counters.

The host's own interfaces show what its programs send and receive
(:class:`~xwch.transfer.others.OtherTraffic`), not what a laptop or a phone behind the same home
router does; and against those a delay-based controller yields only where they build a queue
it can feel (not beside BBR, not behind fq_codel or CAKE). But the router counts every byte of
its Internet side, and most home routers tell anyone on their network who asks: an Internet
Gateway Device (UPnP IGD) answers ``GetTotalBytesSent`` and ``GetTotalBytesReceived`` of its
``WANCommonInterfaceConfig`` service. Those bytes minus XWCH's own are others', judged like the
host's interfaces (:class:`~xwch.transfer.others.TrafficJudge`): while they go a transfer's
way, it makes way.

The router is found once, lazily, when a transfer first asks (SSDP discovery and the device's
description, through ``miniupnpc``: a decade of routers' quirks handled by the reference UPnP
client, rather than a parser of our own), and read every :attr:`GatewayTraffic.POLL` seconds
only while transfers keep asking: a router is never polled by an idle worker. miniupnpc blocks,
so discovery and readings run in a thread.

What it cannot see or gets wrong:

- no router answers (UPnP switched off, a network without one, a router that does not count):
  the delay controller and the host's own interfaces remain the guards; found again later;
- a router that updates its counters every few seconds, or counts nothing that its hardware
  forwards (NAT offload), shows others late or never;
- other XWCH workers behind the same router are others: they make way to each other in turn,
  as two parties on one host do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.transfer.others import OwnCounters, TrafficJudge, UnsentBytes

# Runs a blocking call away from the reactor thread (deferToThread in a real party).
RunBlocking = Callable[[Callable[[], Any]], "Deferred[Any]"]

# IGD's byte counters are unsigned 32-bit: they wrap every 4 GiB (14 minutes at 5 MB/s).
WRAP = 1 << 32


class Gateway(Protocol):
    """A home router that counts the bytes of its Internet side (blocking calls)."""

    @property
    def address(self) -> str:
        """Where it answers, for the log."""
        ...

    def counters(self) -> tuple[int, int]:
        """Bytes (sent, received) over its Internet side, as the router reports them (they may
        wrap at 2**32)."""
        ...


# Finds the network's gateway (blocking); None when none answers.
FindGateway = Callable[[], "Gateway | None"]


class _UPnPGateway:
    """An Internet Gateway Device reached through miniupnpc."""

    def __init__(self, upnp: object, address: str) -> None:
        self._upnp = upnp
        self.address = address

    def counters(self) -> tuple[int, int]:
        upnp = self._upnp
        return int(upnp.totalbytesent()), int(upnp.totalbytereceived())  # type: ignore[attr-defined]


def find_upnp_gateway(discover_ms: int = 500) -> Gateway | None:
    """The Internet gateway of this host's network, by UPnP (blocking: about ``discover_ms``);
    None when none answers or miniupnpc is missing."""
    try:
        import miniupnpc  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    upnp = miniupnpc.UPnP()
    upnp.discoverdelay = discover_ms
    try:
        if upnp.discover() == 0:
            return None
        # selectigd raises when no device found is an Internet gateway; a gateway whose own
        # link is down still counts (and reads zero).
        control_url = upnp.selectigd()
        gateway = _UPnPGateway(upnp, str(control_url))
        gateway.counters()
    except Exception:
        return None
    return gateway


class Unwrapped:
    """A 32-bit counter read now and then, as the 64-bit total it stands for."""

    def __init__(self) -> None:
        self._last: int | None = None
        self.total = 0

    def update(self, raw: int) -> int:
        if self._last is not None:
            step = raw - self._last
            if step < 0:
                # Wrapped (it went back by more than half the range), or reset (the router
                # restarted): then nothing is known of what crossed meanwhile.
                step = step + WRAP if -step > WRAP // 2 else 0
            self.total += step
        self._last = raw
        return self.total


@dataclass(frozen=True)
class _Reading:
    at: float
    counters: tuple[int, int]
    own: tuple[int, int]


class GatewayTraffic(TrafficJudge):
    """Tells a sender whether others' traffic goes its way over the home router's Internet
    side."""

    log = Logger()

    # Read four times a second while transfers ask: two small requests to the router each
    # time; the window (half a second) then holds three readings.
    POLL = 0.25
    # Polling stops when no transfer asked for this long.
    IDLE = 2.0
    # With no gateway found (or one that stopped answering), look again after this long, the
    # next time a transfer asks.
    RETRY = 300.0

    def __init__(
        self,
        reactor: IReactorTime,
        own: OwnCounters,
        run_blocking: RunBlocking,
        find: FindGateway = find_upnp_gateway,
        unsent: UnsentBytes = lambda: 0,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._own = own
        self._run_blocking = run_blocking
        self._find = find
        self._unsent = unsent
        self.gateway: Gateway | None = None
        self._looked_at = float("-inf")
        self._looking = False
        self._reading = False
        self._asked = float("-inf")
        self._sent = Unwrapped()
        self._received = Unwrapped()
        # Said once each, not at every retry.
        self._said_none = False

    def present(self, index: int) -> bool:
        """Whether others' traffic was seen over the router in the last QUIET seconds;
        ``index`` 0 for what this host sends, 1 for what it receives."""
        now = self._reactor.seconds()
        self._asked = now
        if self.gateway is None:
            self._look(now)
        elif not self._reading:
            self._read()
        return self.seen_within_quiet(index, now)

    # Finding the router

    def _look(self, now: float) -> None:
        if self._looking or now - self._looked_at < self.RETRY:
            return
        self._looking = True
        self._looked_at = now
        d = self._run_blocking(self._find)
        d.addCallbacks(self._found, self._not_found)

    def _found(self, gateway: object) -> None:
        self._looking = False
        if gateway is None:
            if not self._said_none:
                self.log.info(
                    "network: no UPnP Internet gateway answered; traffic of other devices "
                    "behind the router is judged by delay only"
                )
                self._said_none = True
            return
        self.gateway = cast(Gateway, gateway)
        self._sent, self._received = Unwrapped(), Unwrapped()
        self.log.info(
            "network: watching the router's Internet side at {address}: transfers make way "
            "to other devices' traffic",
            address=self.gateway.address,
        )
        self._read()

    def _not_found(self, failure: Failure) -> None:
        self._looking = False
        self.log.warn("network: looking for the router failed: {error}", error=failure.value)

    # Reading it

    def _read(self) -> None:
        gateway = self.gateway
        if gateway is None or self._reactor.seconds() - self._asked > self.IDLE:
            # Idle: the next transfer to ask starts reading again.
            self._reading = False
            return
        self._reading = True
        d = self._run_blocking(lambda: self._reading_of(gateway))
        d.addCallbacks(self._got, self._failed)

    def _reading_of(self, gateway: Gateway) -> _Reading:
        """The router's counters, and XWCH's own bytes at the same moment: read just before
        and just after the router answers (in the thread that asks it, so that no wait for
        the reactor comes between), the mean of the two. At 5 MB/s, a skew of 20 ms would
        pass for others' 0.2 MB/s over the window."""
        before, own_before = self._reactor.seconds(), self._own()
        counters = gateway.counters()
        after, own_after = self._reactor.seconds(), self._own()
        own = (
            (own_before[0] + own_after[0]) // 2,
            (own_before[1] + own_after[1]) // 2,
        )
        return _Reading((before + after) / 2, counters, own)

    def _got(self, reading: _Reading) -> None:
        sent, received = reading.counters
        self.judge(
            reading.at,
            (self._sent.update(sent), self._received.update(received)),
            reading.own,
            (self._unsent(), 0),
        )
        wait = max(0.0, self.POLL - (self._reactor.seconds() - reading.at))
        self._reactor.callLater(wait, self._read)

    def _failed(self, failure: Failure) -> None:
        self._reading = False
        self.log.warn(
            "network: the router stopped answering ({error}); looking for it again later",
            error=failure.value,
        )
        self.gateway = None
        self._looked_at = self._reactor.seconds()
