"""XWCH yields a busy link: in private network namespaces joined by a 40 Mbit/s shaped link, a
bulk TCP flow that starts while an XWCH download runs gets (nearly) what it gets alone, and a
download watching the host's interfaces makes way for every kind of competitor: CUBIC through a
deep buffer, CUBIC behind fq_codel (or, where the kernel lacks it, a shallow buffer), BBR, and a
constant-rate UDP flow like a video call; and a download watching the home router's counters
(read over UPnP from the miniupnpd daemon many home routers run) makes way for the same
competitors on another device of the home, whose traffic never crosses the host.

Needs root and iproute2 (as in CI); skipped, saying why, elsewhere. Timing-based only in that it
measures rates over seconds, with generous margins; the namespaces and every process started in
them are removed at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.netlab import (
    RATE_BYTES,
    Child,
    Lab,
    congestion_available,
    gateway_unavailable,
    lab_unavailable,
    make_object,
    qdisc_available,
)

pytestmark = pytest.mark.integration

# The competing flow alone, then XWCH alone, then both: seconds of each phase.
SOLO = 2.5
XWCH_ALONE = 2.0
BOTH = 3.0
# XWCH's delay control reacts within a round trip, then its TCP connection drains: the window
# measured starts one second after the competing flow does.
SETTLE = 1.0


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@contextmanager
def clean_lab(**shape: Any) -> Iterator[Lab]:
    """A lab shaped as told (skipped, saying why, where namespaces cannot be made), checked at
    the end for leftover processes and namespaces."""
    why = lab_unavailable()
    if why:
        pytest.skip(why)
    with Lab(**shape) as made:
        spawned = made.children
        yield made
    assert all(child.popen.poll() is not None for child in spawned), "a process outlived the lab"
    # Its own only: other labs (another test run on the machine) come and go meanwhile.
    left = set(made.names.values()) & namespaces()
    assert not left, f"the lab's namespaces were not all removed: {sorted(left)}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with clean_lab() as made:
        yield made


def test_a_bulk_flow_gets_the_link_back_from_an_xwch_download(lab: Lab, tmp_path: Path) -> None:
    """A bulk TCP flow starting while XWCH downloads gets at least 80% of its solo rate (bytes
    over the window), and XWCH alone had used most of the link before it came."""
    root = tmp_path / "warehouse"
    digest, size = make_object(root, int(RATE_BYTES * 12))
    sink = lab.spawn("client", "sink", "sink")
    sink_port = str(sink.wait_port())
    server = lab.spawn("server", "warehouse", "serve", str(root))
    url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"

    blast = lab.spawn("server", "tcp", "blast", lab.CLIENT_ADDRESS, sink_port)
    time.sleep(SOLO)
    now = time.monotonic()
    solo = sink.rate(now - (SOLO - SETTLE), now)
    blast.stop()
    assert solo > 0.5 * RATE_BYTES, f"the link carries only {solo:.0f} B/s"

    fetch = lab.spawn(
        "client", "xwch", "fetch", url, digest, str(size), str(tmp_path / "out.bin"),
        "--packet-size", "500000",
    )  # fmt: skip
    flowing(fetch)
    time.sleep(XWCH_ALONE + 0.5)
    now = time.monotonic()
    alone = fetch.rate(now - XWCH_ALONE + 0.5, now)
    assert alone > 0.6 * RATE_BYTES, f"XWCH alone got {alone:.0f} B/s"

    started = time.monotonic()
    blast = lab.spawn("server", "tcp", "blast", lab.CLIENT_ADDRESS, sink_port)
    time.sleep(BOTH)
    shared = sink.rate(started + SETTLE, started + BOTH)
    blast.stop()
    fetch.stop()
    assert shared >= 0.8 * solo, (
        f"the bulk flow got {shared / solo:.0%} of its solo rate ({shared:.0f} of {solo:.0f} B/s)"
    )


# A competitor: how the router queues (Lab's arguments), and the flow ("udp" for the call).
COMPETITORS = {
    "cubic-deep-buffer": ({"latency": "200ms"}, "cubic"),
    "cubic-fq_codel": ({"aqm": True}, "cubic"),
    # Where the kernel has no fq_codel: queues kept short by a shallow buffer, which is what
    # defeats a delay target there too.
    "cubic-shallow-buffer": ({"latency": "10ms"}, "cubic"),
    "bbr-deep-buffer": ({"latency": "200ms"}, "bbr"),
    "video-call-udp": ({"latency": "200ms"}, "udp"),
}
# XWCH's rate beside the competitor, measured from this long after it started...
REACTION = 1.5
# ... for this long, is at most this share of its rate alone (it drops to 32 KiB/s, under 1%).
YIELDED = 0.3


def start_competitor(
    lab: Lab, flow: str, tcp_port: str, udp_port: str, to: str = Lab.CLIENT_ADDRESS
) -> float:
    """Start the competing flow from the server to ``to`` (the client); when it started
    sending."""
    if flow == "udp":
        child = lab.spawn("server", "call", "udp-send", to, udp_port)
    else:
        child = lab.spawn("server", "tcp", "blast", to, tcp_port, "--congestion", flow)
    return started_at(child)


def flowing(fetch: Child, timeout: float = 30.0) -> None:
    """Once the download's first bytes have arrived (a Python process starts slowly on a busy
    machine: its rate alone is measured from there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(total > 0 for _, total in list(fetch.samples)):
            return
        time.sleep(0.01)
    raise AssertionError(f"{fetch.name} got nothing: {fetch.stderr()}")


def started_at(child: Child, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in list(child.events):
            if "started" in event:
                return float(event["started"])
        time.sleep(0.01)
    raise AssertionError(f"{child.name} did not start: {child.stderr()}")


@pytest.mark.parametrize("competitor", sorted(COMPETITORS))
def test_a_download_watching_the_host_makes_way_for_every_competitor(
    competitor: str, tmp_path: Path
) -> None:
    """Whatever the competitor (a bulk flow through a deep or short queue, BBR, a call), an
    XWCH download watching the host's interfaces is down to a trickle a second and a half after
    it starts, having filled most of the link alone before."""
    alone, beside = download_beside(competitor, tmp_path, home=False)
    assert beside <= YIELDED * alone, (
        f"beside {competitor}, XWCH kept {beside / alone:.0%} of its rate alone"
    )


@pytest.mark.parametrize("competitor", sorted(COMPETITORS))
def test_a_download_watching_the_router_makes_way_for_another_device(
    competitor: str, tmp_path: Path
) -> None:
    """The competitor now runs on another device of the client's home (its bytes never cross
    the client's interfaces): an XWCH download watching the home router's counters is down to
    a trickle a second and a half after it starts, having filled most of the link alone."""
    alone, beside = download_beside(competitor, tmp_path, home=True)
    assert beside <= YIELDED * alone, (
        f"beside {competitor} on another device, XWCH kept {beside / alone:.0%} of its rate alone"
    )


def download_beside(competitor: str, tmp_path: Path, home: bool) -> tuple[float, float]:
    """An XWCH download watching its host (and, ``home``, its router) alone on the link, then
    beside ``competitor`` (on the client, or on the home's other device): its rates (B/s)
    alone, and beside from REACTION seconds after the competitor started. Skips, saying why,
    where the lab or this competitor cannot run."""
    shape, flow = COMPETITORS[competitor]
    why = lab_unavailable() or (gateway_unavailable() if home else None)
    if why:
        pytest.skip(why)
    if shape.get("aqm") and not qdisc_available("fq_codel"):
        pytest.skip("this kernel has no fq_codel (cubic-shallow-buffer stands in)")
    if flow == "bbr" and not congestion_available("bbr"):
        pytest.skip("this kernel has no tcp_bbr")
    side, watch = ("laptop", ("--watch", "--watch-gateway")) if home else ("client", ("--watch",))
    with clean_lab(home=home, **shape) as lab:
        if home:
            lab.start_gateway(tmp_path)
        root = tmp_path / "warehouse"
        digest, size = make_object(root, int(RATE_BYTES * 12))
        tcp_port = str(lab.spawn(side, "sink", "sink").wait_port())
        udp_port = str(lab.spawn(side, "udp-sink", "udp-sink").wait_port())
        server = lab.spawn("server", "warehouse", "serve", str(root))
        url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"
        fetch = lab.spawn(
            "client", "xwch", "fetch", url, digest, str(size), str(tmp_path / "out.bin"),
            "--packet-size", "500000", *watch,
        )  # fmt: skip
        flowing(fetch)
        time.sleep(XWCH_ALONE + 0.5)
        now = time.monotonic()
        alone = fetch.rate(now - XWCH_ALONE + 0.5, now)
        assert alone > 0.6 * RATE_BYTES, f"XWCH alone got {alone:.0f} B/s"

        to = lab.LAPTOP_ADDRESS if home else lab.CLIENT_ADDRESS
        started = start_competitor(lab, flow, tcp_port, udp_port, to=to)
        time.sleep(REACTION + BOTH)
        return alone, fetch.rate(started + REACTION, started + REACTION + BOTH)
