"""A worker's Work Alive carries what its transfers did, so the coordinator can sense load."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.fakes.coordinator import FakeCoordinator
from tests.fakes.warehouse import result_of
from tests.unit.test_worker_service import TOP_OF_EACH_STEP
from xwch.protocol.codec import convert
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import HostFacts, Policy, TransfersReport
from xwch.transfer import PacketPacer
from xwch.worker.service import WorkerService

FACTS = HostFacts("host", "10.0.0.2", "linux-x86_64", 2, 2**30, 1, 1.0, protocol=PROTOCOL_VERSION)


def test_each_work_alive_reports_the_transfers_since_the_last() -> None:
    """The worker's pacer meters its packets; each Work Alive hands the counts over and they
    start afresh; the reply's policy reaches the pacer."""
    clock = Clock()
    coordinator = FakeCoordinator(
        alive_interval=5.0, policy=Policy(packet_size=65536, packet_sleep=0.2, max_transfers=2)
    )
    pacer = PacketPacer(Policy(), None, clock, interface=lambda: (1000, 5000))

    async def store(url: str, digest: str, size: int, path: Path, capability: str) -> None:
        pass

    service = WorkerService(
        clock,
        coordinator.api(),
        FACTS,
        lambda assignment: None,  # type: ignore[arg-type,return-value]
        store,
        pacer,
        retry_policy=TOP_OF_EACH_STEP,
    )
    service.startService()
    result_of(service.when_registered())
    pacer.meter.record("http://w1:8751", 0, 4_000_000, 0.8, 0.003)
    clock.advance(5.0)
    pacer.meter.record("http://w1:8751", 1000, 0, 0.01, 0.002)
    clock.advance(5.0)
    bodies = [body for _, body in coordinator.alive_bodies]
    first, second = (convert(b["transfers"], TransfersReport, "transfers") for b in bodies[:2])
    assert [(url, p.received, p.packets) for url, p in first.peers.items()] == [
        ("http://w1:8751", 4_000_000, 1)
    ]
    assert first.seconds == 5.0
    assert [(p.sent, p.received) for p in second.peers.values()] == [(1000, 0)]
    assert (second.interface_sent, second.interface_received) == (0, 0)
    assert pacer.policy.packet_sleep == 0.2 and pacer.slots.limit == 2
    d: Deferred[None] = service.stopService()
    clock.advance(10)
    result_of(d)
