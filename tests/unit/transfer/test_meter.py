"""The transfer meter and rates as people write them."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from xwch.protocol.codec import convert
from xwch.protocol.wire import MAX_REPORTED_PEERS
from xwch.protocol.worker import TransfersReport
from xwch.transfer.meter import OTHER_PEERS, TransferMeter, counted_interfaces
from xwch.transfer.rates import format_rate, parse_rate


def test_a_report_counts_each_peer_since_the_last_one() -> None:
    """Bytes, busy time, packets and delays add up per peer; a report starts the count afresh."""
    clock = Clock()
    counters = iter([(1000, 2000), (6000, 9000), (6000, 9000)])
    meter = TransferMeter(clock, lambda: next(counters))
    meter.record("http://w1", 0, 1000, 0.1, 0.002)
    meter.record("http://w1", 0, 3000, 0.3, 0.004)
    meter.record("http://w2", 500, 0, 0.05, 0.010)
    clock.advance(5.0)
    report = meter.take_report()
    assert report.seconds == 5.0
    (n1, w1), (n2, w2) = report.peers.items()
    assert (n1, w1.received, w1.packets, w1.min_rtt, w1.avg_rtt) == (
        "http://w1",
        4000,
        2,
        0.002,
        0.003,
    )
    assert w1.busy == pytest.approx(0.4)
    assert (n2, w2.sent, w2.min_rtt) == ("http://w2", 500, 0.010)
    assert (report.interface_sent, report.interface_received) == (5000, 7000)
    assert convert(report.to_json(), TransfersReport, "transfers") == report
    clock.advance(5.0)
    empty = meter.take_report()
    assert (empty.peers, empty.interface_sent) == ({}, 0)
    assert (meter.total_sent, meter.total_received) == (500, 4000)


def test_a_report_names_a_bounded_number_of_peers() -> None:
    """However many peers a party talks to, a report names at most MAX_REPORTED_PEERS."""
    meter = TransferMeter(Clock(), None)
    for n in range(MAX_REPORTED_PEERS * 2):
        meter.record(f"http://w{n}", 1, 0, 0.0, None)
    report = meter.take_report()
    assert len(report.peers) == MAX_REPORTED_PEERS
    assert OTHER_PEERS in report.peers
    assert report.interface_sent is None


@pytest.mark.parametrize(
    ("text", "rate"),
    [("500k", 500_000), ("2.5M", 2_500_000), ("1MiB", 1024**2), ("40mbit", 5_000_000), ("7", 7)],
)
def test_rates_read_as_people_write_them(text: str, rate: float) -> None:
    """``--upload-cap 2.5M`` or ``40mbit``: bytes per second."""
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1M", "0", "1X"])
def test_nonsense_rates_are_refused(text: str) -> None:
    """A rate that is not a positive amount per second is refused with an example."""
    with pytest.raises(ValueError):
        parse_rate(text)


def test_rates_print_for_people() -> None:
    assert (format_rate(None), format_rate(512), format_rate(4_200_000)) == (
        "-",
        "512 B/s",
        "4.2 MB/s",
    )


def test_only_physical_interfaces_count_when_the_host_has_some() -> None:
    """A VPN's tunnel and containers' bridges carry bytes a physical interface carries too: left
    out beside a physical interface; in a container or namespace with none, all but loopback."""
    physical = {"eth0", "wlan0"}.__contains__
    names = ["lo", "eth0", "wlan0", "wg0", "docker0", "veth12ab"]
    assert counted_interfaces(names, physical) == ["eth0", "wlan0"]
    assert counted_interfaces(["lo", "eth0@if7", "c0"], lambda _: False) == ["eth0@if7", "c0"]
