"""Others' traffic on the host's interfaces: seen from the counters, and made way for."""

from __future__ import annotations

from twisted.internet.task import Clock

from xwch.protocol.worker import Policy
from xwch.transfer.delay import DelayController
from xwch.transfer.meter import TransferMeter
from xwch.transfer.others import OtherTraffic
from xwch.transfer.pacing import DOWNLOAD, UPLOAD, PacketPacer

SENT, RECEIVED = 0, 1
LINK = 5_000_000.0
STEP = OtherTraffic.SAMPLE_PERIOD


class FakeHost:
    """The interface counters of a host whose traffic the test scripts, second by second:
    XWCH's payload (with the headers' overhead on the wire) and others' bytes."""

    OVERHEAD = 1.046  # 66 bytes of headers on 1448-byte segments

    def __init__(self) -> None:
        self.interface = [0, 0]
        self.own = [0, 0]

    def counters(self) -> tuple[int, int]:
        return self.interface[0], self.interface[1]

    def own_bytes(self) -> tuple[int, int]:
        return self.own[0], self.own[1]

    def carry(self, index: int, xwch: float, others: float) -> None:
        self.own[index] += int(xwch)
        self.interface[index] += int(xwch * self.OVERHEAD + others)


def run(
    clock: Clock,
    host: FakeHost,
    watch: OtherTraffic,
    seconds: float,
    xwch: float,
    others: float,
    index: int = RECEIVED,
) -> list[bool]:
    """``seconds`` of traffic at the given rates; whether others were present at each step."""
    seen = []
    for _ in range(round(seconds / STEP)):
        clock.advance(STEP)
        host.carry(index, xwch * STEP, others * STEP)
        seen.append(watch.present(index))
    return seen


def watching() -> tuple[Clock, FakeHost, OtherTraffic]:
    clock = Clock()
    host = FakeHost()
    return clock, host, OtherTraffic(clock, host.counters, host.own_bytes)


def test_xwch_alone_at_full_rate_sees_nobody() -> None:
    """A download filling the link, headers and all, is not mistaken for someone else's."""
    clock, host, watch = watching()
    assert not any(run(clock, host, watch, 10.0, xwch=LINK / FakeHost.OVERHEAD, others=0))


def test_a_bulk_flow_is_seen_within_half_a_second() -> None:
    """Others' bulk download starting beside XWCH's is seen within half a second."""
    clock, host, watch = watching()
    run(clock, host, watch, 2.0, xwch=LINK, others=0)
    seen = run(clock, host, watch, 1.0, xwch=LINK / 2, others=LINK / 2)
    assert any(seen[:5])


def test_a_video_call_is_seen_beside_a_full_download() -> None:
    """A 4 Mbit/s call (500 kB/s) beside XWCH at the rest of the link is seen."""
    clock, host, watch = watching()
    run(clock, host, watch, 2.0, xwch=LINK - 500_000, others=0)
    assert any(run(clock, host, watch, 1.0, xwch=LINK - 500_000, others=500_000))


def test_chatter_under_the_floor_is_ignored() -> None:
    """An idle desktop's chatter (50 kB/s) does not stop XWCH."""
    clock, host, watch = watching()
    assert not any(run(clock, host, watch, 5.0, xwch=LINK / 2, others=50_000))


def test_others_are_present_until_quiet_for_a_second() -> None:
    """Once others stop, they count as present for QUIET seconds more, then no longer."""
    clock, host, watch = watching()
    run(clock, host, watch, 2.0, xwch=30_000, others=LINK)
    after = run(clock, host, watch, 3.0, xwch=30_000, others=0)
    quiet_from = after.index(False) * STEP
    assert OtherTraffic.QUIET <= quiet_from <= OtherTraffic.QUIET + OtherTraffic.WINDOW + STEP
    assert not any(after[after.index(False) :])


def test_a_window_left_from_before_a_pause_starts_afresh() -> None:
    """Others' download that ended during a pause of XWCH's transfers (nobody asked the
    watch) does not make the next transfer wait: only what crosses from now on counts."""
    clock, host, watch = watching()
    run(clock, host, watch, 1.0, xwch=LINK, others=0)
    clock.advance(30.0)
    host.carry(RECEIVED, 0, 20 * LINK)  # others' 100 MB, long done
    clock.advance(30.0)
    assert not any(run(clock, host, watch, 2.0, xwch=LINK, others=0))


def test_each_direction_is_watched_apart() -> None:
    """Others' uploads do not make a download yield, and the other way round."""
    clock, host, watch = watching()
    run(clock, host, watch, 2.0, xwch=0, others=LINK, index=SENT)
    assert watch.present(SENT)
    assert not watch.present(RECEIVED)


def test_counters_that_go_back_are_no_traffic() -> None:
    """An interface that disappears (its counters drop) is not read as negative traffic, nor
    as others' traffic."""
    clock, host, watch = watching()
    run(clock, host, watch, 1.0, xwch=LINK, others=0)
    host.interface = [0, 0]
    assert not any(run(clock, host, watch, 1.0, xwch=0, others=0))


def test_a_controller_making_way_drops_to_the_floor_and_takes_back_its_rate() -> None:
    """A transfer making way goes at MIN_RATE whatever the delays say, then comes back to the
    rate it had (none: the whole link)."""
    clock = Clock()
    controller = DelayController(clock)
    controller.record(500_000, 0.1, 0.001)
    assert controller.rate is None
    controller.make_way()
    assert controller.making_way and controller.rate == DelayController.MIN_RATE
    assert controller.packet_size(500_000) == DelayController.WAY_PACKET
    for _ in range(10):
        clock.advance(controller.delay())
        controller.record(DelayController.WAY_PACKET, 0.01, 0.001)
        assert controller.rate == DelayController.MIN_RATE
    controller.take_back()
    assert not controller.making_way and controller.rate is None
    assert controller.delay() == 0.0


def test_a_pacer_makes_its_transfers_way_while_others_download() -> None:
    """A pacer watching the host: its download goes in small, spaced packets while others'
    bytes arrive, and at full size again about a second after they stop; its uploads go on."""
    clock = Clock()
    host = FakeHost()
    pacer = PacketPacer(
        Policy(packet_size=500_000), None, clock, interface=host.counters, watch_others=True
    )
    download, upload = pacer.new_controller(), pacer.new_controller()

    def carry(xwch: float, others: float) -> int:
        """One step of traffic; the size of the download's next packet."""
        clock.advance(STEP)
        pacer.meter.on_wire("http://10.0.0.2:8080/objects/x", 0, int(xwch * STEP))
        host.interface[RECEIVED] += int(xwch * STEP * FakeHost.OVERHEAD + others * STEP)
        return pacer.packet_size(DOWNLOAD, download)

    assert {carry(LINK, 0) for _ in range(10)} == {500_000}
    # Seen at the first step: a tenth of a second of a full link is 20% of the window.
    assert [carry(30_000, LINK) for _ in range(10)] == [DelayController.WAY_PACKET] * 10
    download.record(DelayController.WAY_PACKET, 0.01, 0.001)
    assert download.delay() >= 0.1  # an eighth of a second per 4 KiB at 32 KiB/s
    assert pacer.packet_size(UPLOAD, upload) == 500_000
    after = [carry(0, 0) for _ in range(20)]
    held = round(OtherTraffic.QUIET / STEP) - 1
    assert after[:held] == [DelayController.WAY_PACKET] * held
    assert after[-1] == 500_000


def test_a_pacer_not_told_to_watch_ignores_the_counters() -> None:
    """Without watch_others (tests, benchmarks of the delay control alone) nobody is watched,
    until told to (a warehouse's copies); without counters, never."""
    host = FakeHost()
    pacer = PacketPacer(Policy(), None, Clock(), interface=host.counters)
    assert pacer.others is None
    pacer.watch_host()
    assert pacer.others is not None
    blind = PacketPacer(Policy(), None, Clock(), interface=None, watch_others=True)
    assert blind.others is None


def test_the_meter_counts_only_bytes_that_cross_the_interfaces() -> None:
    """XWCH's bytes to a loopback peer never reach the interfaces: not counted as its own."""
    meter = TransferMeter(Clock(), None)
    meter.on_wire("http://10.0.0.2:8080/objects/x", 0, 1000)
    meter.on_wire("http://127.0.0.1:8080/objects/x", 0, 5000)
    meter.on_wire("http://localhost:8080/objects/x", 700, 0)
    meter.on_wire("http://10.0.0.2:8080/objects/x", 300, 0)
    assert meter.wire_bytes() == (300, 1000)


def upload(
    clock: Clock,
    meter: TransferMeter,
    host: FakeHost,
    watch: OtherTraffic,
    *,
    call: float,
    lone: bool = False,
) -> list[bool]:
    """Five seconds of an upload of 500 kB packets at the link's rate less ``call`` (others'
    bytes/s beside it), counted as the real upload counts them (once answered); whether others
    were present, asked every 10 ms (several transfers ask at any time) or, ``lone``, between
    two packets (as a lone upload asks its pacer)."""
    packet, rate, step = 500_000, (LINK - call) / FakeHost.OVERHEAD, 0.01
    peer = "http://10.0.0.2:8080/objects/x"
    seen = []
    sending = 0
    meter.sending(peer, packet)
    for _ in range(500):
        clock.advance(step)
        host.interface[SENT] += int(rate * step * FakeHost.OVERHEAD + call * step)
        sending += int(rate * step)
        between = sending >= packet
        if between:
            meter.sent(peer, packet)
            sending -= packet
            if lone:
                seen.append(watch.present(SENT))
            meter.sending(peer, packet)
        if not lone:
            seen.append(watch.present(SENT))
    meter.sent(peer, packet)  # the upload stops: its last packet is answered
    return seen


def test_an_upload_counted_per_packet_is_not_taken_for_others() -> None:
    """An upload's packet is counted only once answered, a tenth of a second of the link at a
    time: the packet being sent counts as XWCH's, so a lone upload is never taken for others."""
    clock, host = Clock(), FakeHost()
    meter = TransferMeter(clock, None)
    watch = OtherTraffic(clock, host.counters, meter.wire_bytes, meter.unsent_bytes)
    assert not any(upload(clock, meter, host, watch, call=0))


def test_a_call_beside_a_lone_upload_is_seen() -> None:
    """A 4 Mbit/s call beside a lone upload filling the rest of the link is seen: asked
    between two packets, the upload's count is exact."""
    clock, host = Clock(), FakeHost()
    meter = TransferMeter(clock, None)
    watch = OtherTraffic(clock, host.counters, meter.wire_bytes, meter.unsent_bytes)
    assert not any(upload(clock, meter, host, watch, call=0, lone=True))
    # Seen once the window has moved past the upload alone (half a second, five packets).
    assert all(upload(clock, meter, host, watch, call=500_000, lone=True)[5:])


def test_a_transfer_over_loopback_never_makes_way() -> None:
    """A transfer with a peer on the same machine shares no link: others' traffic on the
    interfaces does not slow it."""
    clock = Clock()
    host = FakeHost()
    pacer = PacketPacer(
        Policy(packet_size=500_000), None, clock, interface=host.counters, watch_others=True
    )
    local = pacer.new_controller()
    local.local = True
    for _ in range(10):
        clock.advance(STEP)
        host.interface[RECEIVED] += int(LINK * STEP)
        assert pacer.packet_size(DOWNLOAD, local) == 500_000
    assert pacer.packet_size(DOWNLOAD, pacer.new_controller()) == DelayController.WAY_PACKET
