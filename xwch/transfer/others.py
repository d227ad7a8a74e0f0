"""Whether anyone else's traffic crosses this host's network interfaces, by their byte counters.

A delay-based controller yields only to traffic that builds a queue it can feel. Many
competitors build none: a BBR flow keeps the bottleneck's queue short, a router with AQM
(fq_codel, CAKE) keeps every queue short, a video call sends at a constant rate and suffers
from the bursts long before a queue is standing. But every byte any program of this host sends
or receives is counted by the kernel on its interfaces (``/proc/net/dev``, read by psutil), and
XWCH knows its own: the interface's bytes minus XWCH's (times the headers' overhead) are others'
bytes. When others' bytes appear in the direction a transfer goes, the transfer makes way; when
they have been gone for :attr:`OtherTraffic.QUIET` seconds, it takes the link again.

The counters are read lazily, at most every :attr:`OtherTraffic.SAMPLE_PERIOD` seconds, when a
sender asks; others' rate is judged over the last :attr:`OtherTraffic.WINDOW` seconds, long
enough that the bytes still in the kernel's socket buffers (counted by the interface, not yet
by XWCH) weigh little against those of the window.

What it cannot see: traffic of other devices behind the same router (a family's laptop) never
crosses this host's interfaces; the router's counters show it (:mod:`xwch.transfer.gateway`),
and where no router tells, the delay controller is the only guard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from xwch.transfer.meter import InterfaceCounters

# (bytes sent, bytes received) so far by XWCH over the interfaces (loopback peers excluded).
OwnCounters = Callable[[], "tuple[int, int]"]
# Bytes XWCH handed to sockets and may have sent already, not yet in OwnCounters.
UnsentBytes = Callable[[], int]


@dataclass(frozen=True)
class _Sample:
    at: float
    # The interfaces' counters, and XWCH's own, as (sent, received).
    interface: tuple[int, int]
    own: tuple[int, int]


class TrafficJudge:
    """Judges whether others' traffic goes each way, from samples of a device's byte counters
    and of XWCH's own bytes taken at the same moments (:meth:`judge`)."""

    # Others' rate is judged over this long: at 5 MB/s, the 64 KiB a socket read takes at once
    # is 2.6% of a window's bytes.
    WINDOW = 0.5
    # Others' traffic counts from this rate on (bytes/s): 0.8 Mbit/s, a sixth of a video call
    # of 4 Mbit/s, above the chatter of an idle desktop (and of XWCH's own control messages).
    FLOOR = 100_000.0
    # ... and above this share of XWCH's own rate over the window, the slack of telling XWCH's
    # bytes from headers and from bytes still in socket buffers, and of headers heavier than
    # OVERHEAD: IPv6's (6%), a VPN's on the physical interface (WireGuard's, 10-11%). A call of
    # 4 Mbit/s is seen beside XWCH at up to 6 MB/s.
    SLACK = 0.08
    # Interface bytes per byte of XWCH's payload: Ethernet, IP and TCP headers of 66 bytes on
    # segments of 1448 (MTU 1500) are 4.6%; measured 3-5% in the namespace lab.
    OVERHEAD = 1.05
    # A link others left stays theirs this long after the window stops showing them: their
    # traffic often comes in bursts (a page, a sync) that taking the link between two would hit.
    # Half a second: with the window, XWCH is back about a second after others stop.
    QUIET = 0.5
    # Samples further apart than this are no window: what crossed between them is no news of
    # now (nobody asked for a while, or the device did not answer).
    STALE = 2 * WINDOW

    def __init__(self) -> None:
        self._samples: deque[_Sample] = deque()
        # When others were last seen sending and receiving (-inf: never).
        self._seen = [float("-inf"), float("-inf")]
        self.rates: tuple[float, float] = (0.0, 0.0)

    def seen_within_quiet(self, index: int, now: float) -> bool:
        """Whether others' traffic was seen in the QUIET seconds before ``now``."""
        return now - self._seen[index] < self.QUIET

    def judge(
        self,
        at: float,
        counters: tuple[int, int],
        own: tuple[int, int],
        unsent: tuple[int, int] = (0, 0),
    ) -> None:
        """Add a sample: the device's counters and XWCH's own bytes (sent, received) at
        ``at``, and XWCH's bytes on their way, not yet in ``own``."""
        sample = _Sample(at, counters, own)
        if self._samples and at - self._samples[-1].at > self.STALE:
            self._samples.clear()
        self._samples.append(sample)
        # Keep one sample at least WINDOW old: the start of the window judged.
        while len(self._samples) > 2 and at - self._samples[1].at >= self.WINDOW:
            self._samples.popleft()
        first = self._samples[0]
        span = at - first.at
        if span < self.WINDOW / 2:
            return
        rates = []
        for index in (0, 1):
            # Counters that went back (an interface gone) are no traffic.
            device = max(0, sample.interface[index] - first.interface[index])
            mine = max(0, sample.own[index] - first.own[index]) + unsent[index]
            others = max(0.0, device - mine * self.OVERHEAD) / span
            rates.append(others)
            if others > max(self.FLOOR, self.SLACK * mine / span):
                self._seen[index] = at
        self.rates = (rates[0], rates[1])


class OtherTraffic(TrafficJudge):
    """Tells a sender whether others' traffic goes its way on this host's interfaces."""

    # Counters are read at most ten times a second (a read of /proc/net/dev costs ~0.1 ms).
    SAMPLE_PERIOD = 0.1

    def __init__(
        self,
        reactor: IReactorTime,
        interface: InterfaceCounters,
        own: OwnCounters,
        unsent: UnsentBytes = lambda: 0,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._interface = interface
        self._own = own
        self._unsent = unsent
        self._last_read = float("-inf")

    def present(self, index: int) -> bool:
        """Whether others' traffic was seen in the last QUIET seconds; ``index`` 0 for what
        this host sends, 1 for what it receives."""
        now = self._reactor.seconds()
        self._sample(now)
        return self.seen_within_quiet(index, now)

    def _sample(self, now: float) -> None:
        if now - self._last_read < self.SAMPLE_PERIOD:
            return
        counters = self._interface()
        if counters is None:
            return
        self._last_read = now
        # An upload's packet is counted once answered; the part of the one being sent that left
        # already is XWCH's too: counted as if all had, so others are never overestimated.
        # (A lone upload is sampled between two packets, when none is being sent.)
        self.judge(now, counters, self._own(), (self._unsent(), 0))
