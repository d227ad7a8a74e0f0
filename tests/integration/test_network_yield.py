"""XWCH yields a busy link: in private network namespaces joined by a 40 Mbit/s shaped link, a
bulk TCP flow that starts while an XWCH download runs gets (nearly) what it gets alone.

Needs root and iproute2 (as in CI); skipped, saying why, elsewhere. Timing-based only in that it
measures rates over seconds, with generous margins; the namespaces and every process started in
them are removed at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netlab import RATE_BYTES, Lab, lab_unavailable, make_object

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


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = lab_unavailable()
    if why:
        pytest.skip(why)
    before = namespaces()
    with Lab() as made:
        spawned = made.children
        yield made
    assert all(child.popen.poll() is not None for child in spawned), "a process outlived the lab"
    assert namespaces() == before, "the lab's namespaces were not all removed"


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
