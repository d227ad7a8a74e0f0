"""The delay-based controller (LEDBAT-like), fed synthetic packets on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from xwch.transfer.delay import DelayController
from xwch.transfer.window import windowed_max, windowed_min

MIB = 1024 * 1024
RATE = 5_000_000.0  # a 40 Mbit/s link


def send(clock: Clock, c: DelayController, queue: float, share: float = 1.0) -> int:
    """One download packet over a link of RATE bytes/s: ``queue`` seconds of others' queue
    before the first byte, then the packet at ``share`` of the link. Returns its size."""
    clock.advance(c.delay())
    size = c.packet_size(MIB)
    rtt = 0.001 + queue
    duration = rtt + size / (RATE * share)
    clock.advance(duration)
    c.record(size, duration, rtt)
    return size


def test_a_free_link_is_not_limited() -> None:
    """With no queue on the path, a transfer goes as fast as the path allows: no rate, no wait."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(20):
        send(clock, c, queue=0.0)
    assert c.rate is None
    assert c.delay() == 0.0
    assert c.packet_size(MIB) == MIB


def test_a_queue_above_target_makes_the_transfer_yield_within_a_few_packets() -> None:
    """When another flow fills the queue, the rate falls to the floor in a few round trips,
    the packets get small and the waits between them grow."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(5):
        send(clock, c, queue=0.0)
    rates = []
    for _ in range(12):
        send(clock, c, queue=0.3, share=0.5)
        rates.append(c.rate)
    # The very first packet that meets the queue halves the rate it got (within a round trip).
    first = MIB / (0.301 + MIB / (RATE * 0.5))
    assert rates[0] == pytest.approx(first * 0.5)
    assert rates[-1] == DelayController.MIN_RATE
    assert c.packet_size(MIB) == DelayController.MIN_PACKET
    assert 0 < c.delay() <= DelayController.MAX_GAP
    assert c.queueing_delay == pytest.approx(0.3)


def test_the_rate_never_falls_below_half_of_what_the_packet_got() -> None:
    """Even far above target, a packet cuts the rate to no less than half of what it measured
    (the lower of the rate and its own throughput: TCP's answer to a loss)."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(3):
        send(clock, c, queue=0.0)
    for queue in (0.08, 0.08, 0.08):
        before = c.rate
        size = c.packet_size(MIB)
        duration = 0.001 + queue + size / RATE
        clock.advance(c.delay())
        clock.advance(duration)
        c.record(size, duration, 0.001 + queue)
        reference = min(before or float("inf"), size / duration)
    assert c.rate is not None
    # 80 ms against a 50 ms target: off by 60%, so x0.4 would be the proportional cut.
    assert c.rate == pytest.approx(max(DelayController.MIN_RATE, reference * 0.5))


def test_a_small_queue_under_target_lets_the_rate_grow() -> None:
    """Queueing delay under the target lets the rate grow, faster the further under it is."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(3):
        send(clock, c, queue=0.0)
    for _ in range(6):
        send(clock, c, queue=0.5)
    low = c.rate
    assert low is not None
    send(clock, c, queue=0.04)
    grown = c.rate
    assert grown is not None and low < grown < low * 1.5


def test_the_transfer_takes_the_link_back_when_the_queue_drains() -> None:
    """Once the other flow stops, the rate doubles packet by packet and then lets go, within a
    few seconds of clock time."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(5):
        send(clock, c, queue=0.0)
    for _ in range(15):
        send(clock, c, queue=0.3, share=0.5)
    assert c.rate == DelayController.MIN_RATE
    stopped = clock.seconds()
    while c.rate is not None:
        send(clock, c, queue=0.0)
        assert clock.seconds() - stopped < 5.0
    assert c.packet_size(MIB) == MIB


def test_an_upload_senses_delay_from_its_duration() -> None:
    """An upload, whose answer comes after the whole body, counts as delay the time a packet
    takes beyond the best rate seen: a packet slowed by a queue makes it yield."""
    clock = Clock()
    c = DelayController(clock)
    for _ in range(4):
        c.record(MIB, 0.001 + MIB / RATE, None)
    assert c.rate is None
    for _ in range(3):
        c.record(MIB, 0.4 + 2 * MIB / RATE, None)
    assert c.rate is not None
    assert c.last_delay == pytest.approx(0.4 + MIB / RATE, rel=0.01)


def test_the_base_delay_forgets_after_ten_minutes() -> None:
    """A base delay older than the history (a route that changed) is forgotten."""
    clock = Clock()
    c = DelayController(clock)
    c.record(MIB, 0.2, 0.001)
    clock.advance(DelayController.BASE_BUCKET * DelayController.BASE_BUCKETS + 1)
    c.record(MIB, 0.2, 0.020)
    assert c.base_delay == pytest.approx(0.020)


def test_windows_keep_the_extreme_of_their_buckets() -> None:
    """The windowed minimum and maximum follow samples and age out whole buckets."""
    low, high = windowed_min(10.0, 3), windowed_max(10.0, 3)
    for when, value in [(0.0, 5.0), (5.0, 2.0), (12.0, 7.0), (25.0, 4.0)]:
        low.add(value, when)
        high.add(value, when)
    assert (low.value(), high.value()) == (2.0, 7.0)
    assert low.value(now=31.0) == 4.0
    assert high.value(now=100.0) is None
    with pytest.raises(ValueError):
        windowed_min(0.0, 1)
