"""Pacing: caps held smoothly, packets shrunk under a cap, the policy, concurrent transfers."""

from __future__ import annotations

import bisect
import itertools

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from xwch.protocol.worker import Policy
from xwch.transfer.bucket import TokenBucket
from xwch.transfer.pacing import DOWNLOAD, UPLOAD, PacketPacer
from xwch.transfer.slots import TransferSlots

MIB = 1024 * 1024


def pacer(clock: Clock, **caps: float | None) -> PacketPacer:
    return PacketPacer(Policy(packet_size=MIB), None, clock, interface=None, **caps)


def sliding_rates(events: list[tuple[float, int]], start: float, end: float) -> list[float]:
    """Bytes per second over every one-second window [t, t+1) from ``start`` to ``end``, in
    steps of 10 ms, counting each packet at its completion time."""
    times = [when for when, _ in events]
    totals = list(itertools.accumulate((n for _, n in events), initial=0))
    rates = []
    t = start
    while t + 1.0 <= end + 1e-9:
        first, last = bisect.bisect_left(times, t), bisect.bisect_left(times, t + 1.0)
        rates.append(totals[last] - totals[first])
        t += 0.01
    return rates


def run_capped_transfer(
    clock: Clock, p: PacketPacer, total: int, wire: float, direction: str = DOWNLOAD
) -> list[tuple[float, int]]:
    """Send ``total`` bytes through ``p`` as a sender would; each packet takes ``wire`` s."""
    events = []
    sent = 0
    while sent < total:
        size = min(p.packet_size(direction), total - sent)  # type: ignore[arg-type]
        clock.advance(p.delay_before(size, direction))  # type: ignore[arg-type]
        clock.advance(wire)
        events.append((clock.seconds(), size))
        sent += size
    return events


def test_a_cap_is_held_within_five_percent_over_any_second() -> None:
    """Under a 1 MiB/s cap, every one-second window of a long transfer carries 1 MiB +- 5%."""
    clock = Clock()
    p = pacer(clock, download_cap=MIB)
    events = run_capped_transfer(clock, p, 20 * MIB, wire=0.005)
    rates = sliding_rates(events, start=events[0][0] + 1.0, end=events[-1][0])
    assert len(rates) > 1000
    assert min(rates) >= 0.95 * MIB
    assert max(rates) <= 1.05 * MIB


def test_a_cap_shrinks_packets_to_a_fortieth_of_a_second() -> None:
    """A 1 MiB packet under a 1 MiB/s cap would be a one-second burst: packets shrink to 1/40 s."""
    clock = Clock()
    p = pacer(clock, download_cap=MIB)
    assert p.packet_size(DOWNLOAD) == MIB // 40
    assert p.packet_size(UPLOAD) == MIB
    p.set_download_cap(100 * 1024)
    assert p.packet_size(DOWNLOAD) == PacketPacer.MIN_PACKET


def test_upload_and_download_caps_are_separate() -> None:
    """A download cap does not slow uploads, and the reverse."""
    clock = Clock()
    p = pacer(clock, upload_cap=10_000.0)
    size = p.packet_size(UPLOAD)
    clock.advance(p.delay_before(size, UPLOAD))
    assert p.delay_before(size, UPLOAD) == pytest.approx(size / 10_000.0)
    assert p.delay_before(MIB, DOWNLOAD) == 0.0
    assert (p.upload_cap, p.download_cap, p.rate_cap) == (10_000.0, None, 10_000.0)


def test_set_rate_cap_caps_both_directions_and_refuses_nonsense() -> None:
    """``set_rate_cap`` (what a volunteer's preference sets) caps both ways; 0 is refused."""
    clock = Clock()
    p = pacer(clock)
    p.set_rate_cap(50_000.0)
    assert (p.upload_cap, p.download_cap) == (50_000.0, 50_000.0)
    p.set_rate_cap(None)
    assert p.rate_cap is None
    with pytest.raises(ValueError):
        p.set_rate_cap(0)


def test_a_shared_bucket_holds_the_cap_for_all_its_senders() -> None:
    """Two senders on one bucket share the cap: together they get it, not twice it."""
    clock = Clock()
    bucket = TokenBucket(1000.0, clock)
    first = bucket.reserve(100, 100)
    second = bucket.reserve(100, 100)
    assert (first, second) == (pytest.approx(0.1), pytest.approx(0.2))


def test_the_policy_sleep_and_the_controller_combine_with_the_cap() -> None:
    """Each gap is the longest of the policy's sleep, the controller's wait and the cap's."""
    clock = Clock()
    p = PacketPacer(Policy(packet_size=1000, packet_sleep=0.3), 4000.0, clock, interface=None)
    assert p.delay_before(1000) == pytest.approx(0.25)
    clock.advance(0.25)
    assert p.delay_before(1000) == pytest.approx(0.3)


def test_slots_follow_the_policy_limit() -> None:
    """At most ``max_transfers`` transfers run at once; the others start as slots free up."""
    clock = Clock()
    p = PacketPacer(Policy(max_transfers=1), None, clock, interface=None)
    first = Deferred.fromCoroutine(p.slots.acquire())
    second = Deferred.fromCoroutine(p.slots.acquire())
    assert first.called and not second.called
    p.update(Policy(max_transfers=2))
    assert second.called
    third = Deferred.fromCoroutine(p.slots.acquire())
    assert not third.called and p.slots.waiting == 1
    p.slots.release()
    assert third.called


def test_a_transfer_cancelled_while_waiting_leaves_the_queue() -> None:
    """A transfer given up while waiting for a slot takes none."""
    slots = TransferSlots(1)
    Deferred.fromCoroutine(slots.acquire())
    waiting = Deferred.fromCoroutine(slots.acquire())
    waiting.cancel()
    waiting.addErrback(lambda f: None)
    assert slots.waiting == 0
    slots.release()
    assert slots.active == 0
