"""Bytes moved per site link over the last minutes, for the network page's plot.

Workers report, in each Work Alive, the bytes they sent to and received from each warehouse
since their previous one. Added up by (worker's site, warehouse's site) in buckets of
:attr:`TrafficHistory.BUCKET` seconds, they give each site link's rate over time. Warehouses'
heartbeats report the same bytes seen from the other end, so they are not added again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from xwch.protocol.worker import TransfersReport

# A peer the worker could not name a site of (a warehouse gone, the "other peers" bucket).
UNKNOWN_SITE = "?"


@dataclass(frozen=True)
class LinkRates:
    """One site link's rates, oldest bucket first, in bytes per second."""

    link: str  # "worker site -> warehouse site"
    upload: tuple[float, ...]
    download: tuple[float, ...]


class TrafficHistory:
    """Bytes per site link and direction, bucketed by time, for the last :attr:`SPAN`."""

    BUCKET = 10.0
    SPAN = 10 * 60.0

    def __init__(self, clock: IReactorTime, site_of_peer: Callable[[str], str | None]) -> None:
        self._clock = clock
        self._site_of_peer = site_of_peer
        # (index, {(link, direction): bytes}) of each bucket with traffic, oldest first.
        self._buckets: deque[tuple[int, dict[tuple[str, str], int]]] = deque()

    def _bucket_index(self) -> int:
        return int(self._clock.seconds() // self.BUCKET)

    def worker_report(self, worker_site: str | None, report: TransfersReport) -> None:
        index = self._bucket_index()
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append((index, {}))
        counts = self._buckets[-1][1]
        for peer, traffic in report.peers.items():
            link = f"{worker_site or UNKNOWN_SITE} -> {self._site_of_peer(peer) or UNKNOWN_SITE}"
            if traffic.sent:
                counts[(link, "upload")] = counts.get((link, "upload"), 0) + traffic.sent
            if traffic.received:
                counts[(link, "download")] = counts.get((link, "download"), 0) + traffic.received
        self._trim(index)

    def _trim(self, index: int) -> None:
        oldest = index - int(self.SPAN // self.BUCKET) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def version(self) -> int:
        """Changes when the plot would: at each new bucket."""
        return self._bucket_index()

    def rates(self) -> tuple[float, list[LinkRates]]:
        """The start time of the oldest bucket shown, and each link's rates since then."""
        now = self._bucket_index()
        count = int(self.SPAN // self.BUCKET)
        # Always the whole span: the time axis stays put while the page is watched.
        first = now - count + 1
        self._trim(now)
        per_link: dict[str, dict[str, list[float]]] = {}
        for index, counts in self._buckets:
            for (link, direction), amount in counts.items():
                series = per_link.setdefault(
                    link,
                    {"upload": [0.0] * (now - first + 1), "download": [0.0] * (now - first + 1)},
                )
                if index >= first:
                    series[direction][index - first] += amount / self.BUCKET
        return first * self.BUCKET, [
            LinkRates(link, tuple(s["upload"]), tuple(s["download"]))
            for link, s in sorted(per_link.items())
        ]


def peer_sites(warehouse_sites: Callable[[], Mapping[str, str]]) -> Callable[[str], str | None]:
    """A peer as workers name it (a warehouse's URL) to its site, as the catalog knows now."""

    def site_of(peer: str) -> str | None:
        sites = warehouse_sites()
        return sites.get(peer) or sites.get(peer.rstrip("/"))

    return site_of
