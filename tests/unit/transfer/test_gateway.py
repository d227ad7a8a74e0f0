"""Other devices' traffic over the home router's Internet side: seen from its counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from xwch.protocol.worker import Policy
from xwch.transfer.gateway import WRAP, GatewayTraffic, Unwrapped
from xwch.transfer.pacing import DOWNLOAD, PacketPacer

SENT, RECEIVED = 0, 1
LINK = 5_000_000.0
STEP = 0.05  # how often transfers ask


class FakeRouter:
    """A home router's Internet side as a UPnP gateway reports it: 32-bit counters of every
    device's bytes, XWCH's host among them."""

    address = "http://192.168.1.1:5000/ctl/IPConn"
    OVERHEAD = 1.046

    def __init__(self, start: int = 0) -> None:
        self.wan = [start, start]
        self.own = [0, 0]
        self.reads = 0
        self.answering = True

    def counters(self) -> tuple[int, int]:
        if not self.answering:
            raise OSError("connection refused")
        self.reads += 1
        return self.wan[0] % WRAP, self.wan[1] % WRAP

    def own_bytes(self) -> tuple[int, int]:
        return self.own[0], self.own[1]

    def carry(self, index: int, xwch: float, others: float) -> None:
        self.own[index] += int(xwch)
        self.wan[index] += int(xwch * self.OVERHEAD + others)


def at_once(call: Callable[[], Any]) -> Deferred[Any]:
    """Runs a blocking call where the test runs: the fake router answers at once."""
    try:
        return succeed(call())
    except Exception as e:
        return fail(e)


class Finder:
    def __init__(self, router: FakeRouter | None) -> None:
        self.router = router
        self.looks = 0

    def __call__(self) -> FakeRouter | None:
        self.looks += 1
        return self.router


def watching(
    router: FakeRouter | None = None,
) -> tuple[Clock, FakeRouter, GatewayTraffic, Finder]:
    clock = Clock()
    router = router or FakeRouter()
    find = Finder(router)
    return clock, router, GatewayTraffic(clock, router.own_bytes, at_once, find), find


def run(
    clock: Clock,
    router: FakeRouter,
    watch: GatewayTraffic,
    seconds: float,
    xwch: float,
    others: float,
    index: int = RECEIVED,
) -> list[bool]:
    """``seconds`` of traffic at the given rates, a transfer asking every STEP; whether others
    were present at each ask."""
    seen = []
    for _ in range(round(seconds / STEP)):
        clock.advance(STEP)
        router.carry(index, xwch * STEP, others * STEP)
        seen.append(watch.present(index))
    return seen


def test_xwch_alone_at_full_rate_sees_nobody() -> None:
    clock, router, watch, _ = watching()
    assert not any(run(clock, router, watch, 10.0, xwch=LINK / FakeRouter.OVERHEAD, others=0))
    assert router.reads > 0


def test_another_devices_download_is_seen_within_a_second() -> None:
    """A laptop's bulk download beside XWCH's: seen in the direction it goes only."""
    clock, router, watch, _ = watching()
    run(clock, router, watch, 2.0, xwch=LINK / FakeRouter.OVERHEAD, others=0)
    seen = run(clock, router, watch, 1.0, xwch=LINK / 2, others=LINK / 2)
    assert any(seen)
    assert not watch.present(SENT)


def test_a_video_call_beside_a_full_download_is_seen() -> None:
    clock, router, watch, _ = watching()
    run(clock, router, watch, 2.0, xwch=LINK - 500_000, others=0)
    assert any(run(clock, router, watch, 1.5, xwch=LINK - 500_000, others=500_000))


def test_others_gone_the_link_is_taken_back() -> None:
    clock, router, watch, _ = watching()
    run(clock, router, watch, 2.0, xwch=LINK / 2, others=LINK / 2)
    after = run(clock, router, watch, 3.0, xwch=LINK / FakeRouter.OVERHEAD, others=0)
    assert after[0] and not any(after[-20:])


def test_wrapping_counters_are_no_traffic_of_others() -> None:
    """IGD counters are 32-bit: XWCH's download across their wrap is still XWCH's alone."""
    clock, router, watch, _ = watching(FakeRouter(start=WRAP - 3_000_000))
    assert not any(run(clock, router, watch, 5.0, xwch=LINK / FakeRouter.OVERHEAD, others=0))
    assert router.wan[RECEIVED] > WRAP


def test_unwrapped_counters() -> None:
    counter = Unwrapped()
    assert counter.update(WRAP - 10) == 0
    assert counter.update(5) == 15  # wrapped
    assert counter.update(105) == 115
    assert counter.update(3) == 115  # went back a little: a reset, nothing known
    assert counter.update(10) == 122


def test_the_router_is_read_only_while_transfers_ask() -> None:
    """An idle worker never polls the router: readings stop IDLE seconds after the last ask
    and start again with the next one."""
    clock, router, watch, _ = watching()
    run(clock, router, watch, 1.0, xwch=LINK, others=0)
    clock.advance(GatewayTraffic.IDLE + GatewayTraffic.POLL)
    reads = router.reads
    clock.advance(60.0)
    assert router.reads == reads
    run(clock, router, watch, 1.0, xwch=LINK, others=0)
    assert router.reads > reads


def test_the_router_is_read_every_poll_period() -> None:
    """Every POLL seconds (a reading falls due between two asks), not at every ask."""
    clock, router, watch, _ = watching()
    run(clock, router, watch, 10.0, xwch=LINK, others=0)
    assert 10.0 / (GatewayTraffic.POLL + STEP) <= router.reads <= 10.0 / GatewayTraffic.POLL + 1


def test_no_gateway_looked_for_again_only_after_retry() -> None:
    clock = Clock()
    router = FakeRouter()
    find = Finder(None)
    watch = GatewayTraffic(clock, router.own_bytes, at_once, find)
    assert not any(run(clock, router, watch, 5.0, xwch=LINK / 2, others=LINK / 2))
    assert find.looks == 1
    clock.advance(GatewayTraffic.RETRY)
    find.router = router
    run(clock, router, watch, 2.0, xwch=LINK / 2, others=LINK / 2)
    assert find.looks == 2
    assert watch.present(RECEIVED)


def test_a_router_that_stops_answering_is_dropped_and_found_again() -> None:
    clock, router, watch, find = watching()
    run(clock, router, watch, 1.0, xwch=LINK, others=0)
    router.answering = False
    run(clock, router, watch, 1.0, xwch=LINK, others=0)
    assert watch.gateway is None
    router.answering = True
    clock.advance(GatewayTraffic.RETRY)
    run(clock, router, watch, 2.0, xwch=LINK / 2, others=LINK / 2)
    assert find.looks == 2
    assert watch.present(RECEIVED)


def test_the_pacer_makes_way_to_other_devices() -> None:
    """A pacer watching the router (and not its host) makes way while the router shows
    others' bytes, and takes the link back after."""
    clock = Clock()
    router = FakeRouter()
    pacer = PacketPacer(Policy(packet_size=500_000), None, clock, interface=None)
    pacer.gateway = GatewayTraffic(clock, router.own_bytes, at_once, Finder(router))
    controller = pacer.new_controller()
    full = pacer.packet_size(DOWNLOAD, controller)

    def ask(seconds: float, others: float) -> int:
        size = 0
        for _ in range(round(seconds / STEP)):
            clock.advance(STEP)
            router.carry(RECEIVED, (LINK - others) / FakeRouter.OVERHEAD * STEP, others * STEP)
            size = pacer.packet_size(DOWNLOAD, controller)
        return size

    ask(2.0, others=0)
    assert ask(1.5, others=LINK / 2) < full
    assert ask(5.0, others=0) == full
