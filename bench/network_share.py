"""Benchmarks (a), (b) and (c) of issue 3, on a 40 Mbit/s link between private namespaces.

(a) an XWCH transfer alone reaches >= 90% of the link;
(b) a bulk TCP flow (CUBIC) starting mid-transfer gets, within 5 s, >= 80% of what it gets
    alone, and XWCH is back to >= 90% of the link within 5 s after that flow stops;
(c) a cap is held within 5% over one-second windows: a worker's download cap, and a
    warehouse's upload cap.

    sudo .venv/bin/python bench/network_share.py

The link is a router namespace's interface shaped with tc (tbf 40mbit, 400 ms queue, MTU 1500)
between a client namespace (the worker, the TCP receiver) and a server namespace (the
warehouse, the TCP sender): see ``bench/netlab.py`` for why a router. Needs root and iproute2;
says why and exits 0 when they are missing. Prints figures; asserts nothing (the namespace test
in tests/integration does).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.netlab import RATE_BYTES, Child, Lab, lab_unavailable, make_object, sliding_rates

MB = 1e6
ALONE = 10.0
COMPETE = 12.0
RECOVER = 8.0
CAP = 2_000_000.0
# What the communication manager publishes for a 5 MB/s link: packets of a tenth of a second.
PACKET = 500_000


def per_second(child: Child, start: float, seconds: int) -> list[float]:
    return [child.rate(start + i, start + i + 1) for i in range(seconds)]


def fmt(rates: list[float]) -> str:
    return " ".join(f"{r / MB:4.2f}" for r in rates)


def first_second(rates: list[float], threshold: float) -> int | None:
    for i, r in enumerate(rates):
        if r >= threshold:
            return i + 1
    return None


def cap_windows(child: Child, cap: float) -> str:
    """Sliding one-second windows of what ``child`` counted, once started, against ``cap``."""
    events = []
    last = 0
    for t, total in child.samples:
        events.append((t, total - last))
        last = total
    start, end = events[0][0] + 1.0, events[-1][0]
    rates = sliding_rates(events, start, end)
    return (
        f"{len(rates)} one-second windows (sliding by 10 ms) over {end - start:.1f} s: "
        f"min {min(rates) / cap:.1%}, max {max(rates) / cap:.1%}, "
        f"mean {sum(rates) / len(rates) / cap:.1%} of the cap"
    )


def main() -> int:
    why = lab_unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        root = Path(tmp) / "warehouse"
        size = int(RATE_BYTES * (ALONE + COMPETE + RECOVER + 30))
        digest, size = make_object(root, size)
        print(
            f"link: 40 Mbit/s = {RATE_BYTES / MB:.1f} MB/s (tbf in a router namespace, MTU 1500,"
            f" 400 ms queue); XWCH packets of {PACKET / MB:.1f} MB"
        )
        sink = lab.spawn("client", "sink", "sink")
        sink_port = str(sink.wait_port())
        server = lab.spawn("server", "warehouse", "serve", str(root))
        url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"

        blast = lab.spawn("server", "tcp", "blast", lab.CLIENT_ADDRESS, sink_port)
        time.sleep(6.0)
        now = time.monotonic()
        tcp_alone = sink.rate(now - 4.0, now)
        blast.stop()
        print(f"bulk TCP flow alone: {tcp_alone / MB:.2f} MB/s ({tcp_alone / RATE_BYTES:.0%})")
        time.sleep(1.0)

        fetch = lab.spawn(
            "client", "xwch", "fetch", url, digest, str(size), str(Path(tmp) / "out.bin"),
            "--packet-size", str(PACKET),
        )  # fmt: skip
        time.sleep(ALONE)
        now = time.monotonic()
        alone = fetch.rate(now - (ALONE - 2.0), now)
        print(
            f"(a) XWCH alone: {alone / MB:.2f} MB/s = {alone / RATE_BYTES:.1%} of the link "
            f"({alone / tcp_alone:.1%} of the bulk TCP flow alone)"
        )

        started = time.monotonic()
        blast = lab.spawn("server", "tcp", "blast", lab.CLIENT_ADDRESS, sink_port)
        time.sleep(COMPETE)
        blast.stop()
        stopped = time.monotonic()
        seconds = int(COMPETE) - 1
        tcp = per_second(sink, started, seconds)
        xwch = per_second(fetch, started, seconds)
        print(
            "(b) a bulk TCP flow starts at t=0; MB/s in each second:\n"
            f"    TCP : {fmt(tcp)}\n    XWCH: {fmt(xwch)}"
        )
        print(
            f"    TCP gets >= 80% of its solo rate from second {first_second(tcp, 0.8 * tcp_alone)};"
            f" seconds 2-5: {sink.rate(started + 1, started + 5) / tcp_alone:.0%}, second 5:"
            f" {tcp[4] / tcp_alone:.0%}, the whole {COMPETE:.0f} s:"
            f" {sink.rate(started, stopped) / tcp_alone:.0%} of its solo rate"
        )
        time.sleep(RECOVER)
        after = per_second(fetch, stopped, int(RECOVER) - 1)
        print(
            f"    the TCP flow stops; XWCH, MB/s in each second after: {fmt(after)}\n"
            f"    XWCH >= 90% of the link from second {first_second(after, 0.9 * RATE_BYTES)};"
            f" seconds 4-5: {fetch.rate(stopped + 3, stopped + 5) / RATE_BYTES:.0%} of the link"
        )
        fetch.stop()
        time.sleep(0.5)

        capped = lab.spawn(
            "client", "capped", "fetch", url, digest, str(size), str(Path(tmp) / "capped.bin"),
            "--download-cap", str(CAP), "--packets",
        )  # fmt: skip
        time.sleep(12.0)
        capped.stop()
        print(f"(c) a worker's download cap of {CAP / MB:.1f} MB/s: {cap_windows(capped, CAP)}")
        server.stop()
        server = lab.spawn("server", "warehouse", "serve", str(root), "--upload-cap", str(CAP))
        url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"
        plain = lab.spawn("client", "plain", "get", url, digest)
        time.sleep(12.0)
        plain.stop()
        print(
            f"    a warehouse's upload cap of {CAP / MB:.1f} MB/s, seen by a plain HTTP client: "
            f"{cap_windows(plain, CAP)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
