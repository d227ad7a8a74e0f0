"""Delay-based rate control of one transfer, in the spirit of LEDBAT (RFC 6817).

Each packet is one HTTP request, so each is also one round trip: the controller learns from
every packet how long the far side took to start answering (a download's time to the first
byte), or how much longer than at the best rate seen the packet took (an upload, whose answer
only comes after the whole body). The lowest such delay over the last minutes is the *base*
delay, what the path costs when no queue is in the way; what a packet sees above it is
*queueing* delay: someone else's traffic (or our own, from other transfers) filling a buffer on
the path.

Below the target queueing delay the rate may grow (at most doubling per packet, TCP slow start's
pace); above it, the rate falls in proportion (at most halving per packet). The rate turns into
a wait before the next packet (so the average rate is the controller's) and into a smaller
packet when the rate is low (so one packet never holds a busy link long and the delay is
sampled often). A controller with no reason to limit has no rate at all: the transfer goes as
fast as the path lets it, and a free link is filled.
"""

from __future__ import annotations

import math
from collections import deque

from twisted.internet.interfaces import IReactorTime

from xwch.transfer.window import windowed_max, windowed_min


class DelayController:
    """Sets the pace of one transfer from the queueing delay its packets meet."""

    # Queueing delay aimed at. RFC 6817 says TARGET must be at most 100 ms; half of it leaves a
    # call or a game sharing the link well inside the 150 ms ITU-T G.114 budget for one way.
    TARGET = 0.05
    # Base delay: the minima of ten one-minute buckets (RFC 6817's BASE_HISTORY).
    BASE_BUCKET = 60.0
    BASE_BUCKETS = 10
    # Current delay: the last sample alone (RFC 6817's CURRENT_FILTER lets it be one): each packet
    # is one round trip, so the transfer reacts within one. A late answer that was no queue (a
    # pause on the far side) costs one packet's worth of rate, made up by the next.
    CURRENT_FILTER = 1
    # At most x(1 + GAIN_UP) per packet: doubling per round trip, TCP slow start's pace, which
    # RFC 6817 (section 2.4.2) says a LEDBAT flow must not beat.
    GAIN_UP = 1.0
    # Proportional decrease, never more than halving per packet (TCP's answer to a loss).
    GAIN_DOWN = 1.0
    MAX_DECREASE = 0.5
    # A flow that yields keeps probing: 32 KiB/s is under 1% of a 40 Mbit/s link.
    MIN_RATE = 32.0 * 1024
    # Packets last about this long at the current rate (a tenth of a second: the delay is
    # sampled ten times a second, and the climb back to a free link's rate takes a second or
    # two), and never get smaller than MIN_PACKET (under it HTTP headers would weigh more than
    # 2% of the bytes).
    PACKET_TIME = 0.1
    MIN_PACKET = 16 * 1024
    # ... except while making way for others: 4 KiB every eighth of a second at MIN_RATE. The
    # headers weigh 10% there, some 3 kB/s, and the pacer looks at the host's counters before
    # each packet, so the transfer takes the link back within an eighth of a second of the
    # watch letting it (16 KiB packets would leave half a second between two looks).
    WAY_PACKET = 4 * 1024
    # The longest wait between two packets: the delay is sampled at least once a second, so a
    # link that became free is noticed within a second or two.
    MAX_GAP = 1.0
    # A rate this far above the best throughput seen limits nothing: the controller lets go.
    HEADROOM = 2.0

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._base = windowed_min(self.BASE_BUCKET, self.BASE_BUCKETS)
        self._peak = windowed_max(self.BASE_BUCKET, self.BASE_BUCKETS)
        self._recent: deque[float] = deque(maxlen=self.CURRENT_FILTER)
        self._rate: float | None = None
        self._next_at = reactor.seconds()
        self.queueing_delay = 0.0
        self.last_delay: float | None = None
        # Making way for others' traffic (see make_way), and the rate to take back after.
        self._making_way = False
        self._rate_before: float | None = None
        # The peer is on this machine (loopback): the packets cross no interface and share no
        # link, so others' traffic on the interfaces is no reason to make way.
        self.local = False

    @property
    def rate(self) -> float | None:
        """Bytes per second the transfer keeps to, or None: as fast as the path allows."""
        return self._rate

    @property
    def base_delay(self) -> float | None:
        return self._base.value()

    @property
    def peak_throughput(self) -> float | None:
        """The best bytes per second a packet of this transfer made lately."""
        return self._peak.value()

    @property
    def making_way(self) -> bool:
        return self._making_way

    def make_way(self) -> None:
        """Others' traffic goes this transfer's way (seen on the host's interfaces, where no
        queue need build): down to MIN_RATE from the next packet on, until :meth:`take_back`.

        The floor, not a share: a competitor that is a bulk flow wants the whole link, and a
        call suffers from any burst; what others leave, XWCH cannot tell from here.
        """
        if self._making_way:
            return
        self._making_way = True
        self._rate_before = self._rate
        self._rate = self.MIN_RATE

    def take_back(self) -> None:
        """Others are gone: back to the rate held before making way (none, on a link XWCH had
        to itself), which the delay control corrects from the next packet on."""
        if not self._making_way:
            return
        self._making_way = False
        self._rate = self._rate_before
        self._next_at = self._reactor.seconds()

    def packet_size(self, largest: int) -> int:
        """The size of the next packet: ``largest`` unless the rate is low."""
        if self._making_way:
            return min(largest, self.WAY_PACKET)
        if self._rate is None or largest <= self.MIN_PACKET:
            return largest
        return max(self.MIN_PACKET, min(largest, int(self._rate * self.PACKET_TIME)))

    def delay(self) -> float:
        """Seconds to wait before the next packet."""
        if self._rate is None:
            return 0.0
        return min(self.MAX_GAP, max(0.0, self._next_at - self._reactor.seconds()))

    def record(self, size: int, duration: float, first_byte: float | None) -> float:
        """Learn from a packet of ``size`` bytes that took ``duration`` seconds; its delay.

        ``first_byte`` is the time to the answer's first byte when the packet came in the answer
        (a download); None when it went in the request (an upload).
        """
        now = self._reactor.seconds()
        duration = max(0.0, duration)
        throughput = size / duration if duration > 0 and size > 0 else None
        if throughput is not None:
            self._peak.add(throughput, now)
        peak = self._peak.value(now)
        if first_byte is not None:
            sample = max(0.0, first_byte)
        elif peak is not None and size > 0:
            sample = max(0.0, duration - size / peak)
        else:
            sample = duration
        self.last_delay = sample
        self._base.add(sample, now)
        self._recent.append(sample)
        base = self._base.value(now) or 0.0
        self.queueing_delay = max(0.0, min(self._recent) - base)
        self._adjust(throughput, peak)
        if self._rate is not None:
            # Spacing from the packet's start: the time it spent on the wire counts.
            self._next_at = now - duration + size / self._rate
        return sample

    def _adjust(self, throughput: float | None, peak: float | None) -> None:
        if self._making_way:
            # The delays still teach the base delay; the rate stays at the floor till take_back.
            return
        off_target = (self.TARGET - self.queueing_delay) / self.TARGET
        if off_target >= 0:
            if self._rate is None:
                return
            self._rate *= 1.0 + self.GAIN_UP * off_target
            if peak is not None and self._rate > self.HEADROOM * peak:
                self._rate = None
            return
        reference = self._rate if self._rate is not None else math.inf
        if throughput is not None:
            reference = min(reference, throughput)
        if math.isinf(reference):
            reference = peak if peak is not None else self.MIN_RATE
        factor = max(self.MAX_DECREASE, 1.0 + self.GAIN_DOWN * off_target)
        self._rate = max(self.MIN_RATE, reference * factor)
