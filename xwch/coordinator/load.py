"""Sensing the network's load with no configuration: what each link carries and could carry.

A *link* is a node's way to the network: a worker's (named by its id), a warehouse's (by its
URL), the coordinator's own. The estimator learns from what the parties report:

- a worker's Work Alive and a warehouse's heartbeat carry a :class:`TransfersReport`: XWCH's
  bytes each way per peer, the seconds spent transferring, the packets' delays, and the host's
  interface counters over the same period;
- a worker's report about a warehouse (its peer) tells that warehouse's link's delay as seen
  from afar;
- the coordinator samples its own host's counters.

From these, per link: **capacity**, the best rate seen over the last ten minutes (XWCH's
throughput while busy, or the interface's total); **XWCH's rate** and **other traffic** (the
interface's bytes minus XWCH's, in the busier direction: that is what tells XWCH's traffic from
everyone else's); **base and current delay**, whose difference is the queueing delay; and a
**load** in [0, 1]: the share of the link others take, or how close the queueing delay is to
:attr:`LoadEstimator.DELAY_FULL`, whichever is higher. XWCH's own traffic is not load: a link
XWCH alone fills is a link well used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime

from xwch.protocol.worker import TransfersReport
from xwch.transfer.delay import DelayController
from xwch.transfer.meter import is_loopback_url
from xwch.transfer.window import WindowedExtreme, windowed_max, windowed_min

LINK_WORKER = "worker"
LINK_WAREHOUSE = "warehouse"
LINK_COORDINATOR = "coordinator"
COORDINATOR_LINK = "coordinator"


@dataclass(frozen=True)
class LinkEstimate:
    """What is known of one link, as of ``updated``."""

    link: str
    kind: str
    capacity: float | None
    xwch_rate: float
    other_rate: float | None
    min_rtt: float | None
    avg_rtt: float | None
    queueing_delay: float
    load: float
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "kind": self.kind,
            "capacity": _round(self.capacity),
            "xwch_rate": _round(self.xwch_rate),
            "other_rate": _round(self.other_rate),
            "min_rtt": _round(self.min_rtt, 6),
            "avg_rtt": _round(self.avg_rtt, 6),
            "queueing_delay": round(self.queueing_delay, 6),
            "load": round(self.load, 3),
            "updated": self.updated,
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class _Link:
    kind: str
    capacity: WindowedExtreme
    base_rtt: WindowedExtreme
    xwch_rate: float = 0.0
    other_rate: float | None = None
    avg_rtt: float | None = None
    updated: float = 0.0
    # Delays seen by others (workers about a warehouse) since this link's own last report.
    remote_rtts: list[tuple[float, int]] = field(default_factory=list)


class LoadEstimator:
    """Per-link capacity, traffic, delay and load, from synthetic or real reports."""

    # Capacity: the best rate of the last ten minutes, one bucket a minute (like the base delay
    # of RFC 6817): long enough to have seen the link busy, short enough to follow a change.
    WINDOW_BUCKET = 60.0
    WINDOW_BUCKETS = 10
    # Queueing delay at which a link counts as full: four times the senders' own target, a queue
    # their delay control failed to keep down.
    DELAY_FULL = 4 * DelayController.TARGET
    # A link not heard of for this long is forgotten (a worker gone, a warehouse stopped).
    LINK_TTL = 300.0
    # At most this many links are kept, the least recently heard dropped first: the memory a
    # coordinator spends on estimates is bounded whatever the number of workers.
    MAX_LINKS = 100_000

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._links: OrderedDict[str, _Link] = OrderedDict()

    def __len__(self) -> int:
        return len(self._links)

    # What comes in

    def report(self, link: str, kind: str, report: TransfersReport) -> None:
        """A party's report on its own link (Work Alive, heartbeat)."""
        now = self._clock.seconds()
        state = self._link(link, kind, now)
        seconds = report.seconds
        peers = report.peers
        sent = sum(p.sent for p in peers.values())
        received = sum(p.received for p in peers.values())
        if seconds > 0:
            state.xwch_rate = max(sent, received) / seconds
            state.capacity.add(state.xwch_rate, now)
        for traffic in peers.values():
            if traffic.busy > 0:
                # While a packet was in flight, the link gave XWCH at least this much.
                state.capacity.add(max(traffic.sent, traffic.received) / traffic.busy, now)
        interface = report.interface
        if seconds > 0 and interface is not None:
            # XWCH's bytes to loopback peers never reach the interfaces: not subtracted.
            wire = [p for peer, p in peers.items() if not is_loopback_url(peer)]
            other_sent = max(0, interface.sent - sum(p.sent for p in wire))
            other_received = max(0, interface.received - sum(p.received for p in wire))
            state.other_rate = max(other_sent, other_received) / seconds
            total = max(interface.sent, interface.received) / seconds
            state.capacity.add(total, now)
        rtts = [(p.avg_rtt, p.packets) for p in peers.values() if p.avg_rtt is not None]
        for p in peers.values():
            if p.min_rtt is not None:
                state.base_rtt.add(p.min_rtt, now)
        rtts.extend(state.remote_rtts)
        state.remote_rtts = []
        state.avg_rtt = _weighted_mean(rtts)
        if kind == LINK_WORKER:
            for peer, p in peers.items():
                self._seen_from_afar(peer, p.min_rtt, p.avg_rtt, p.packets, now)

    def host_counters(self, link: str, kind: str, sent: int, received: int, seconds: float) -> None:
        """A host's interface counters over ``seconds`` (the coordinator samples its own)."""
        if seconds <= 0:
            return
        now = self._clock.seconds()
        state = self._link(link, kind, now)
        total = max(sent, received) / seconds
        state.other_rate = total
        state.capacity.add(total, now)

    def _seen_from_afar(
        self, url: str, min_rtt: float | None, avg_rtt: float | None, packets: int, now: float
    ) -> None:
        state = self._links.get(url)
        if state is None:
            # Only warehouses that registered (and heartbeat) have a link here: a report cannot
            # make the coordinator keep state for any URL a worker names.
            return
        if min_rtt is not None:
            state.base_rtt.add(min_rtt, now)
        if avg_rtt is not None and len(state.remote_rtts) < 1000:
            state.remote_rtts.append((avg_rtt, max(1, packets)))

    def forget(self, link: str) -> None:
        self._links.pop(link, None)

    # What goes out

    def estimate(self, link: str) -> LinkEstimate | None:
        self._expire()
        state = self._links.get(link)
        return None if state is None else self._estimate(link, state)

    def estimates(self) -> list[LinkEstimate]:
        self._expire()
        return [self._estimate(link, s) for link, s in self._links.items()]

    def load_of(self, link: str) -> float | None:
        found = self.estimate(link)
        return None if found is None else found.load

    def mean_load(self, kind: str) -> float:
        """The mean load of the links of one kind (0 when none is known)."""
        loads = [e.load for e in self.estimates() if e.kind == kind]
        return sum(loads) / len(loads) if loads else 0.0

    # Inside

    def _link(self, link: str, kind: str, now: float) -> _Link:
        state = self._links.get(link)
        if state is None:
            state = _Link(
                kind=kind,
                capacity=windowed_max(self.WINDOW_BUCKET, self.WINDOW_BUCKETS),
                base_rtt=windowed_min(self.WINDOW_BUCKET, self.WINDOW_BUCKETS),
            )
            self._links[link] = state
            while len(self._links) > self.MAX_LINKS:
                self._links.popitem(last=False)
        else:
            self._links.move_to_end(link)
        state.updated = now
        return state

    def _expire(self) -> None:
        now = self._clock.seconds()
        while self._links:
            link, state = next(iter(self._links.items()))
            if now - state.updated <= self.LINK_TTL:
                break
            del self._links[link]

    def _estimate(self, link: str, state: _Link) -> LinkEstimate:
        now = self._clock.seconds()
        capacity = state.capacity.value(now)
        base = state.base_rtt.value(now)
        queueing = 0.0
        if base is not None and state.avg_rtt is not None:
            queueing = max(0.0, state.avg_rtt - base)
        load = queueing / self.DELAY_FULL
        if capacity and state.other_rate is not None:
            load = max(load, state.other_rate / capacity)
        return LinkEstimate(
            link=link,
            kind=state.kind,
            capacity=capacity,
            xwch_rate=state.xwch_rate,
            other_rate=state.other_rate,
            min_rtt=base,
            avg_rtt=state.avg_rtt,
            queueing_delay=queueing,
            load=min(1.0, max(0.0, load)),
            updated=state.updated,
        )


def _weighted_mean(values: list[tuple[float, int]]) -> float | None:
    weight = sum(w for _, w in values)
    if weight <= 0:
        return None
    return sum(v * w for v, w in values) / weight
