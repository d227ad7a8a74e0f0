"""How well XWCH yields a 40 Mbit/s link to each kind of competitor (issue 22), and its caps.

For each competitor, in a lab of private namespaces joined by a shaped router (``bench/netlab.py``):

- a bulk CUBIC flow through a deep buffer (a token bucket with a 200 ms queue);
- a bulk CUBIC flow behind fq_codel (a home router with smart queue management); where the
  kernel has no fq_codel, a shallow 10 ms drop-tail buffer stands in (queues stay short there
  too, which is what defeats a delay target), and the output says so;
- a bulk BBR flow through the deep buffer (where the kernel has ``tcp_bbr``; says so if not);
- a 4 Mbit/s constant-rate UDP flow through the deep buffer, standing in for a video call;

it prints:

- the competitor's bytes over its whole first 10 s beside an XWCH download, against its first
  10 s alone (its reaction included): goal >= 90%; for the call also its loss, jitter and
  95th-percentile queueing delay, beside XWCH and alone;
- XWCH alone on the free link, as a share of the link: goal >= 90%;
- seconds from the competitor's start until XWCH has backed off (its rate over half a second
  under half its rate alone), and from the competitor's stop until XWCH is back to >= 90% of
  the link (over one second).

``--baseline DIR`` runs the same trials, alternating, with the code of another checkout (made
with ``git archive COMMIT xwch bench | tar -x -C DIR``): on a shared, noisy machine only
figures of one run compare. ``--unwatched`` adds this tree without the watch on the host's
interfaces. ``--home`` puts the competitor on another device of the client's home network (a
laptop behind the same router, whose traffic never crosses the client's interfaces) and makes
the router answer UPnP (miniupnpd); its variants are XWCH watching its host only (what such a
competitor met before) and watching the router's counters too. ``--rounds N`` repeats the whole. ``--only TEXT`` runs the competitors whose name
contains it. ``--caps`` also measures the caps of issue 3 (a worker's download cap, a
warehouse's upload cap, held within 5% over one-second windows).

    sudo .venv/bin/python bench/network_share.py [--baseline DIR] [--unwatched] [--home] [--rounds N]

Needs root and iproute2; says why and exits 0 when they are missing. Prints figures; asserts
nothing (the namespace tests in tests/integration check behaviour).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.netlab import (
    RATE_BYTES,
    ROOT,
    Child,
    Lab,
    congestion_available,
    gateway_unavailable,
    lab_unavailable,
    make_object,
    qdisc_available,
    sliding_rates,
)

MB = 1e6
# Seconds of each phase of a trial: XWCH alone, then beside the competitor, then alone again.
ALONE = 10.0
COMPETE = 10.0
RECOVER = 8.0
CAP = 2_000_000.0
# What the communication manager publishes for a 5 MB/s link: packets of a tenth of a second.
PACKET = 500_000
# The video call: 4 Mbit/s in datagrams of 1000 bytes.
CALL_RATE = 500_000.0
DEEP = "200ms"
SHALLOW = "10ms"


@dataclass(frozen=True)
class Competitor:
    name: str
    # "deep" (tbf, 200 ms), "fq_codel", or "shallow" (tbf, 10 ms: fq_codel's stand-in).
    queue: str
    # A TCP congestion control ("cubic", "bbr"), or "udp" for the constant-rate call.
    flow: str


@dataclass(frozen=True)
class Variant:
    name: str
    root: Path
    fetch_args: tuple[str, ...]


@dataclass
class Trial:
    """The figures of one competitor beside one variant of XWCH."""

    share: float
    fill: float
    backoff: float | None
    recovery: float | None
    xwch_beside: float
    call: str = ""
    # Seconds XWCH made way while alone (the watch mistaking its own bytes for others'), over
    # its seconds alone: None when it does not watch.
    false_way: float | None = None


def competitors() -> tuple[list[Competitor], list[str]]:
    """The competitors this kernel can run, and notes on those it cannot."""
    notes = []
    found = [Competitor("CUBIC, deep buffer", "deep", "cubic")]
    if qdisc_available("fq_codel"):
        found.append(Competitor("CUBIC, fq_codel", "fq_codel", "cubic"))
    else:
        notes.append(
            "this kernel has no fq_codel (nor CAKE, codel, fq): CUBIC behind a shallow 10 ms"
            " drop-tail buffer stands in for it"
        )
        found.append(Competitor("CUBIC, shallow buffer", "shallow", "cubic"))
    if congestion_available("bbr"):
        found.append(Competitor("BBR, deep buffer", "deep", "bbr"))
    else:
        notes.append("this kernel has no tcp_bbr: no BBR competitor")
    found.append(Competitor("4 Mbit/s call (UDP), deep buffer", "deep", "udp"))
    return found, notes


def make_lab(queue: str, home: bool, config_dir: Path) -> Lab:
    if queue == "fq_codel":
        lab = Lab(aqm=True, home=home)
    else:
        lab = Lab(latency=SHALLOW if queue == "shallow" else DEEP, home=home)
    if home:
        try:
            lab.start_gateway(config_dir)
        except BaseException:
            lab.close()
            raise
    return lab


class Competition:
    """One lab, its warehouse and sinks, and the trials run in it."""

    def __init__(self, lab: Lab, competitor: Competitor, root: Path, digest: str, size: int):
        self.lab = lab
        self.competitor = competitor
        self.digest, self.size = digest, size
        self.tmp = root
        # Where the competitor's bytes go: the client itself, or the other device of its home.
        self.target_side = "laptop" if lab.home else "client"
        self.target = lab.LAPTOP_ADDRESS if lab.home else lab.CLIENT_ADDRESS
        self.sink = lab.spawn(self.target_side, "sink", "sink")
        self.sink_port = str(self.sink.wait_port())
        self.udp = lab.spawn(self.target_side, "udp-sink", "udp-sink")
        self.udp_port = str(self.udp.wait_port())
        server = lab.spawn("server", "warehouse", "serve", str(root / "warehouse"))
        self.url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"
        self.runs = 0

    def start_competitor(self) -> tuple[Child, float]:
        """Start the competing flow; it and when it started sending."""
        if self.competitor.flow == "udp":
            child = self.lab.spawn(
                "server", "call", "udp-send", self.target, self.udp_port,
                "--rate", str(CALL_RATE),
            )  # fmt: skip
        else:
            child = self.lab.spawn(
                "server", "tcp", "blast", self.target, self.sink_port,
                "--congestion", self.competitor.flow,
            )  # fmt: skip
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            for event in list(child.events):
                if "started" in event:
                    return child, float(event["started"])
            time.sleep(0.01)
        raise RuntimeError(f"the competitor did not start: {child.stderr()}")

    def counted(self) -> Child:
        return self.udp if self.competitor.flow == "udp" else self.sink

    def alone(self) -> tuple[float, str]:
        """The competitor alone: its bytes over its first COMPETE seconds, and the call's
        figures."""
        child, started = self.start_competitor()
        time.sleep(COMPETE + 0.5)
        child.stop()
        got = self.counted().bytes_at(started + COMPETE) - self.counted().bytes_at(started)
        call = self.call_figures(started) if self.competitor.flow == "udp" else ""
        time.sleep(1.0)
        return got, call

    def call_figures(self, started: float) -> str:
        heard = sorted(
            (int(seq), sent, received)
            for event in list(self.udp.events)
            for seq, sent, received in event.get("udp", [])
            if started <= sent < started + COMPETE
        )
        if len(heard) < 2:
            return "the call got nothing through"
        expected = heard[-1][0] - heard[0][0] + 1
        loss = 1 - len(heard) / expected
        delays = [received - sent for _, sent, received in heard]
        base = min(delays)
        jitter = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(delays))
        p95 = sorted(delays)[int(0.95 * (len(delays) - 1))] - base
        return f"loss {loss:.2%}, jitter {jitter * 1000:.1f} ms, queueing p95 {p95 * 1000:.0f} ms"

    def trial(self, variant: Variant, alone: float) -> Trial:
        self.runs += 1
        fetch = self.lab.spawn(
            "client", "xwch", "fetch", self.url, self.digest, str(self.size),
            str(self.tmp / f"out-{self.runs}.bin"), "--packet-size", str(PACKET),
            "--every", "0.05", *variant.fetch_args, root=variant.root,
        )  # fmt: skip
        time.sleep(ALONE)
        now = time.monotonic()
        solo = fetch.rate(now - (ALONE - 2.0), now)
        child, started = self.start_competitor()
        time.sleep(COMPETE)
        child.stop()
        stopped = time.monotonic()
        time.sleep(RECOVER)
        fetch.stop()
        counted = self.counted()
        got = counted.bytes_at(started + COMPETE) - counted.bytes_at(started)
        call = self.call_figures(started) if self.competitor.flow == "udp" else ""
        watched = [e for e in list(fetch.events) if "watch" in e]
        alone_watch = [e for e in watched if e["watch"] < started] + [
            e for e in watched if e["watch"] > stopped + 3.0
        ]
        time.sleep(1.0)
        return Trial(
            share=got / alone if alone > 0 else 0.0,
            fill=solo / RATE_BYTES,
            backoff=first_window(fetch, started, started + COMPETE, 0.5, lambda r: r < solo / 2),
            recovery=first_window(
                fetch, stopped, stopped + RECOVER, 1.0, lambda r: r >= 0.9 * RATE_BYTES
            ),
            xwch_beside=fetch.rate(started + 2.0, started + COMPETE) / RATE_BYTES,
            call=call,
            false_way=0.1 * sum(bool(e["present"]) for e in alone_watch) if watched else None,
        )


def first_window(
    child: Child, start: float, end: float, width: float, good: object
) -> float | None:
    """Seconds from ``start`` to the end of the first window of ``width`` s whose rate is
    ``good``; None if none is before ``end``."""
    assert callable(good)
    t = start
    while t + width <= end + 1e-9:
        if good(child.rate(t, t + width)):
            return t + width - start
        t += 0.05
    return None


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:4.1f} s"


def report(trial: Trial) -> str:
    line = (
        f"competitor {trial.share:6.1%} of alone | XWCH alone {trial.fill:6.1%} of the link, "
        f"beside (s 2-10) {trial.xwch_beside:6.1%} | backed off after {seconds(trial.backoff)}, "
        f">= 90% again {seconds(trial.recovery)} after"
    )
    if trial.false_way is not None:
        line += f" | made way alone {trial.false_way:.1f} s"
    return line + (f"\n{'':18}call: {trial.call}" if trial.call else "")


def summary(name: str, trials: Sequence[Trial]) -> str:
    def median(values: Sequence[float | None]) -> str:
        known = [v for v in values if v is not None]
        if not known:
            return "never"
        return f"{statistics.median(known):.1f} s" + (
            f" ({len(values) - len(known)} never)" if len(known) < len(values) else ""
        )

    return (
        f"{name:>10}: competitor {statistics.median(t.share for t in trials):.1%} of alone, "
        f"XWCH alone {statistics.median(t.fill for t in trials):.1%} of the link, backed off "
        f"after {median([t.backoff for t in trials])}, back after "
        f"{median([t.recovery for t in trials])} (medians of {len(trials)})"
    )


def share_link(
    variants: Sequence[Variant], rounds: int, only: str | None, home: bool = False
) -> None:
    found, notes = competitors()
    found = [c for c in found if only is None or only.lower() in c.name.lower()]
    for note in notes:
        print(f"note: {note}")
    print(
        f"link: 40 Mbit/s = {RATE_BYTES / MB:.1f} MB/s, MTU 1500; deep buffer {DEEP}; XWCH "
        f"packets of {PACKET / MB:.1f} MB; each trial: XWCH alone {ALONE:.0f} s, beside the "
        f"competitor {COMPETE:.0f} s, alone again {RECOVER:.0f} s"
    )
    if home:
        print("the competitor is another device of the client's home, behind the same router")
    for competitor in found:
        print(f"\n== {competitor.name}")
        results: dict[str, list[Trial]] = {v.name: [] for v in variants}
        with (
            tempfile.TemporaryDirectory() as tmp,
            make_lab(competitor.queue, home, Path(tmp)) as lab,
        ):
            size = int(RATE_BYTES * (ALONE + COMPETE + RECOVER + 10))
            digest, size = make_object(Path(tmp) / "warehouse", size)
            competition = Competition(lab, competitor, Path(tmp), digest, size)
            for round_ in range(rounds):
                alone, call = competition.alone()
                print(f"round {round_ + 1}: the competitor alone: {alone / 10 / MB:.2f} MB/s")
                if call:
                    print(f"{'':18}call alone: {call}")
                # Alternate which variant goes first, so that neither always meets a machine
                # just woken or tired.
                order = variants if round_ % 2 == 0 else list(reversed(variants))
                for variant in order:
                    trial = competition.trial(variant, alone)
                    results[variant.name].append(trial)
                    print(f"  {variant.name:>14}: {report(trial)}")
        for variant in variants:
            print(summary(variant.name, results[variant.name]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--caps", action="store_true", help="also measure the caps")
    parser.add_argument("--only", help="only the competitors whose name contains this")
    parser.add_argument(
        "--home",
        action="store_true",
        help="the competitor on another device behind the same router, which answers UPnP: "
        "XWCH watching its host only, against watching the router's counters too",
    )
    parser.add_argument(
        "--unwatched",
        action="store_true",
        help="also this tree without the watch on the host's interfaces: what a competitor on "
        "another device (behind the same router) meets",
    )
    args = parser.parse_args(argv)
    why = lab_unavailable() or (gateway_unavailable() if args.home else None)
    if why:
        print(f"skipped: {why}")
        return 0
    if args.home:
        variants = [
            Variant("host only", ROOT, ("--watch",)),
            Variant("+ router", ROOT, ("--watch", "--watch-gateway")),
        ]
        share_link(variants, args.rounds, args.only, home=True)
        return 0
    variants = []
    if args.baseline is not None:
        variants.append(Variant("before", args.baseline.resolve(), ()))
    variants.append(Variant("after", ROOT, ("--watch",)))
    if args.unwatched:
        variants.append(Variant("unwatched", ROOT, ()))
    share_link(variants, args.rounds, args.only)
    if args.caps:
        caps()
    return 0


def caps() -> None:
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        root = Path(tmp) / "warehouse"
        digest, size = make_object(root, int(RATE_BYTES * 20))
        server = lab.spawn("server", "warehouse", "serve", str(root))
        url = f"http://{lab.SERVER_ADDRESS}:{server.wait_port()}"
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


if __name__ == "__main__":
    raise SystemExit(main())
