"""How long moving a task's missing inputs to a worker would take: the transfer part of its cost.

The rate of a transfer from a warehouse to a worker starts from a default for the kind of path:
:attr:`TransferEstimates.site_rate` within a site, :attr:`TransferEstimates.wan_rate` between
sites (both configurable: ``--site-rate`` and ``--wan-rate``). When the communication manager
has measured the worker's link (:class:`~xwch.coordinator.load.LoadEstimator`), its capacity
caps that rate and the share of it other traffic takes is taken off: a worker behind a busy link
is a worse place to send data to, which is the whole point of a bandwidth-aware scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from xwch.coordinator.load import LinkEstimate
from xwch.coordinator.scheduler import WorkerView

# A link's estimate by name (a worker's link is named by its id); None when never measured.
LinkLookup = Callable[[str], LinkEstimate | None]


class Locations(Protocol):
    """Where objects are stored (the catalog)."""

    def holder_sites(self, digest: str) -> Collection[str]:
        """The sites of the live warehouses holding ``digest``."""
        ...


def _unmeasured(_link: str) -> LinkEstimate | None:
    return None


class TransferEstimates:
    """Seconds to bring objects to a worker, from where they are stored."""

    # 100 MB/s: a gigabit LAN with some headroom.
    SITE_RATE = 100e6
    # 10 MB/s: a WAN path between labs, an order of magnitude slower than the LAN.
    WAN_RATE = 10e6
    # However loaded, a link is never taken for slower than this share of its default rate
    # (load estimates are noisy; a link is rarely fully blocked for long).
    MIN_SHARE = 0.1

    def __init__(
        self,
        locations: Locations,
        links: LinkLookup = _unmeasured,
        site_rate: float | None = None,
        wan_rate: float | None = None,
    ) -> None:
        self.locations = locations
        self._links = links
        self.site_rate = site_rate or self.SITE_RATE
        self.wan_rate = wan_rate or self.WAN_RATE

    def rate(self, worker: WorkerView, site: str) -> float:
        """Bytes per second from a warehouse at ``site`` to ``worker``."""
        base = self.site_rate if site == worker.site else self.wan_rate
        estimate = self._links(worker.id)
        if estimate is None:
            return base
        if estimate.capacity:
            base = min(base, estimate.capacity)
        return base * max(1.0 - estimate.load, self.MIN_SHARE)

    def seconds(
        self,
        inputs: Iterable[tuple[str, int]],
        worker: WorkerView,
        cached: Callable[[str], bool],
    ) -> float:
        """Time to fetch the inputs ``worker`` lacks, each from its best holder."""
        total = 0.0
        for digest, size in inputs:
            if size == 0 or cached(digest):
                continue
            sites = self.locations.holder_sites(digest)
            if not sites:
                continue  # lost: lineage makes it again; no transfer to weigh now
            total += size / max(self.rate(worker, site) for site in sites)
        return total

    def seconds_at(self, inputs: Iterable[tuple[str, int]], site: str) -> float:
        """Time to fetch the inputs at a worker of ``site`` with an empty cache, default rates."""
        total = 0.0
        for digest, size in inputs:
            sites = self.locations.holder_sites(digest)
            if size == 0 or not sites:
                continue
            total += size / (self.site_rate if site in sites else self.wan_rate)
        return total
