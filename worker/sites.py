"""Which site a worker is in when its volunteer did not say: that of its nearest warehouse.

The coordinator lists the live warehouses and their sites (``GET /warehouses``); the worker times
a TCP handshake with each, a few times, and takes the site of the one that answers fastest. A
handshake is one round trip and asks nothing of the warehouse, so the measure is the network's
alone. The site decides where the worker's outputs go (its site's warehouse) and which tasks the
scheduler gives it (those whose data is there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from xwch.http import JsonApi
from xwch.protocol.warehouse import WarehouseList
from xwch.protocol.wire import API_PREFIX

# Seconds of one round trip to a warehouse's URL (fails if it cannot be reached).
RoundTrip = Callable[[str], Awaitable[float]]

log = Logger()

# Handshakes per warehouse; the fastest counts (the others met a busy moment).
TRIES = 3
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Nearest:
    site: str
    url: str
    round_trip: float


def tcp_round_trip(reactor: IReactorTCP, clock: IReactorTime) -> RoundTrip:
    """Times a TCP connection to the URL's host and port, then closes it."""

    async def measure(url: str) -> float:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        endpoint = HostnameEndpoint(reactor, parts.hostname, port, timeout=CONNECT_TIMEOUT)
        start = clock.seconds()
        protocol = cast(Protocol, await endpoint.connect(Factory.forProtocol(Protocol)))
        elapsed = clock.seconds() - start
        assert protocol.transport is not None
        protocol.transport.loseConnection()
        return elapsed

    return measure


async def nearest_site(coordinator: JsonApi, round_trip: RoundTrip) -> Nearest | None:
    """The site of the warehouse with the shortest round trip; None if none answers."""
    listed = await coordinator.get_as(f"{API_PREFIX}/warehouses", WarehouseList)
    best: Nearest | None = None
    for w in listed.warehouses:
        url, site = w.url, w.site
        times = []
        for _ in range(TRIES):
            try:
                times.append(await round_trip(url))
            except Exception as e:  # refused, timed out, unresolvable: not near, whatever it is
                log.info("warehouse {url} does not answer: {error}", url=url, error=e)
                break
        if times and (best is None or min(times) < best.round_trip):
            best = Nearest(site, url, min(times))
    return best
