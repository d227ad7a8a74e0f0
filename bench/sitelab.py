"""A lab of several sites joined by slow links, for the benchmarks of data locality.

A :class:`SiteLab` is one private network namespace per site (``site-a``, ``site-b``,
``site-c``: the hosts of a site talk over the namespace's own loopback, fast and unshaped) and
a ``hub`` namespace (the coordinator, the client, Dask's scheduler), each joined by a veth to a
``router`` namespace. Every link is shaped both ways, like a site's uplink to a wide-area
network: the router sends to each namespace through ``netem`` (the one-way ``delay`` between
two namespaces) and a token bucket of ``rate``; each namespace sends to the router through a
token bucket of ``rate``. Every packet between two namespaces crosses the router once, so the
router's interface counters tell what crossed sites, whatever the programs believe
(:meth:`SiteLab.traffic`).

Run as a program, this module is a helper started inside a namespace::

    python -m bench.sitelab stage URL TOKEN SITE MANIFEST   upload objects at SITE's warehouse
    python -m bench.sitelab get URL TOKEN PATH              one coordinator GET, its JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.netlab import Namespaces, stop_process

SITES = ("site-a", "site-b", "site-c")
HUB = "hub"
ROUTER = "router"
# A wide-area link between sites: 50 Mbit/s each way, 10 ms one way (a 20 ms round trip
# between two sites), a queue of 100 ms at the router, Ethernet's MTU.
RATE = "50mbit"
DELAY = "10ms"
QUEUE = "100ms"
BURST = "32kbit"
MTU = 1500


@dataclass(frozen=True)
class Traffic:
    """Bytes that crossed the router between two counter readings."""

    between_sites: int  # from one site to another
    hub: int  # between the hub and the sites, both ways (control traffic, the client's)
    per_link: dict[str, tuple[int, int]]  # namespace -> (bytes it sent, bytes it received)


class Service:
    """A long-running process in the lab; its standard output and error go to ``log``."""

    def __init__(self, name: str, popen: subprocess.Popen[str], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    def wait_for(self, marker: str, timeout: float = 60.0) -> str:
        """The rest of the first log line starting with ``marker`` (e.g. a URL)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.log.exists():
                for line in self.log.read_text(errors="replace").splitlines():
                    if line.startswith(marker):
                        return line[len(marker) :].strip()
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.popen, timeout=10.0)


class SiteLab(Namespaces):
    """Sites and a hub around a router; see the module's docstring."""

    def __init__(
        self,
        sites: Sequence[str] = SITES,
        rate: str | None = RATE,
        delay: str | None = DELAY,
        queue: str = QUEUE,
        burst: str = BURST,
        mtu: int = MTU,
    ) -> None:
        self.sites = tuple(sites)
        self.edges = (HUB, *self.sites)
        super().__init__((ROUTER, *self.edges))
        try:
            self._wire(rate, delay, queue, burst, mtu)
        except BaseException:
            self.close()
            raise

    def address(self, side: str) -> str:
        """The address of the namespace ``side`` (a site or the hub)."""
        return f"10.78.{self.edges.index(side) + 1}.1"

    @staticmethod
    def router_link(side: str) -> str:
        """The router's interface towards ``side``."""
        return f"to-{side}"[:15]

    def _wire(self, rate: str | None, delay: str | None, queue: str, burst: str, mtu: int) -> None:
        self.exec(ROUTER, "ip", "link", "set", "lo", "up")
        # Some kernels are built without netem (CONFIG_NET_SCH_NETEM): the links then have
        # their rate and their queue but no added delay; ``self.delay`` tells which.
        self.delay = delay if delay is not None and self._has_netem() else None
        for n, side in enumerate(self.edges, start=1):
            link = self.router_link(side)
            self._run("ip", "link", "add", "eth0", "netns", self.names[side], "type", "veth",
                      "peer", "name", link, "netns", self.names[ROUTER])  # fmt: skip
            self.exec(side, "ip", "link", "set", "lo", "up")
            self.exec(side, "ip", "link", "set", "eth0", "mtu", str(mtu), "up")
            self.exec(side, "ip", "addr", "add", f"10.78.{n}.1/24", "dev", "eth0")
            self.exec(side, "ip", "route", "add", "default", "via", f"10.78.{n}.254")
            self.exec(ROUTER, "ip", "link", "set", link, "mtu", str(mtu), "up")
            self.exec(ROUTER, "ip", "addr", "add", f"10.78.{n}.254/24", "dev", link)
            tbf = ["tbf", "rate", rate or "", "burst", burst, "latency", queue]
            if self.delay is not None:
                self.exec(ROUTER, "tc", "qdisc", "add", "dev", link, "root", "handle", "1:",
                          "netem", "delay", self.delay, "limit", "100000")  # fmt: skip
                if rate is not None:
                    self.exec(ROUTER, "tc", "qdisc", "add", "dev", link, "parent", "1:1",
                              "handle", "10:", *tbf)  # fmt: skip
            elif rate is not None:
                self.exec(ROUTER, "tc", "qdisc", "add", "dev", link, "root", *tbf)
            if rate is not None:
                self.exec(side, "tc", "qdisc", "add", "dev", "eth0", "root", *tbf)
        self.exec(ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def _has_netem(self) -> bool:
        try:
            self.exec(ROUTER, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        except RuntimeError:
            return False
        self.exec(ROUTER, "tc", "qdisc", "del", "dev", "lo", "root")
        return True

    def counters(self) -> dict[str, tuple[int, int]]:
        """The router's counters: namespace -> (bytes the router received from it, sent to it)."""
        links = self.link_bytes(ROUTER)
        return {side: links[self.router_link(side)] for side in self.edges}

    @staticmethod
    def traffic(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> Traffic:
        """What crossed the router between two :meth:`counters` readings.

        Every packet the router forwards came in on one link and went out on another: what the
        sites sent, less what went out to the hub, went from a site to another site.
        """
        per_link = {
            side: (after[side][0] - before[side][0], after[side][1] - before[side][1])
            for side in after
        }
        from_sites = sum(sent for side, (sent, _) in per_link.items() if side != HUB)
        to_hub = per_link[HUB][1]
        hub_total = per_link[HUB][0] + per_link[HUB][1]
        return Traffic(max(0, from_sites - to_hub), hub_total, per_link)

    def start(
        self,
        side: str,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
    ) -> Service:
        """Start ``argv`` in ``side``'s namespace, in a session of its own (a Ctrl-C reaches
        the bench only, which stops its children in order)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = self.popen(
                side,
                argv,
                env=env if env is not None else dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service = Service(name, popen, log)
        self.children.append(service)
        return service

    def stop(self, services: Sequence[Service]) -> None:
        """Stop ``services`` (in reverse order) and forget them."""
        for service in reversed(services):
            service.stop()
            if service in self.children:
                self.children.remove(service)

    def helper(self, side: str, *args: str, timeout: float = 600.0) -> Any:
        """Run ``python -m bench.sitelab ARGS`` in ``side``'s namespace; its JSON answer."""
        popen = self.popen(
            side,
            [sys.executable, "-m", "bench.sitelab", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = popen.communicate(timeout=timeout)
        finally:
            stop_process(popen)
        if popen.returncode != 0:
            raise RuntimeError(f"sitelab {args[0]} in {side} failed: {err.strip()[-2000:]}")
        return json.loads(out)


# -- the helpers run inside a namespace ----------------------------------------------------


def _stage(args: argparse.Namespace) -> None:
    """Upload each object of the manifest at this site's warehouse (the coordinator's uploads
    route picks the warehouse of the ``site`` it is given), then check where each is stored."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from xwch.http import JsonApi, make_http_client
    from xwch.protocol.wire import API_PREFIX
    from xwch.protocol.worker import Policy
    from xwch.transfer import PacketPacer, upload_file

    manifest = json.loads(Path(args.manifest).read_text())
    answer: dict[str, Any] = {"site": args.site, "uploaded": 0, "present": 0, "misplaced": []}

    async def run(reactor: Any) -> None:
        http = make_http_client(reactor)
        api = JsonApi(http, args.coordinator, args.token, reactor)
        pacer = PacketPacer(Policy(), None, reactor)
        for item in manifest:
            ref = {"digest": item["digest"], "size": item["size"]}
            plan = await api.post(
                f"{API_PREFIX}/objects/uploads", {"objects": [ref], "site": args.site}
            )
            slot = plan["objects"][0]
            if slot["present"]:
                answer["present"] += 1
                continue
            await upload_file(
                http,
                plan["warehouse"]["url"],
                item["digest"],
                item["size"],
                Path(item["path"]),
                slot["capability"],
                pacer,
                reactor,
            )
            answer["uploaded"] += 1
        for item in manifest:
            doc = await api.get(f"{API_PREFIX}/objects/{item['digest']}")
            sites = sorted(w["site"] for w in doc["warehouses"])
            if sites != [args.site]:
                answer["misplaced"].append({"digest": item["digest"], "sites": sites})
        sys.stdout.write(json.dumps(answer) + "\n")

    task.react(lambda reactor: ensureDeferred(run(reactor)))


def _get(args: argparse.Namespace) -> None:
    import urllib.request

    request = urllib.request.Request(
        args.coordinator.rstrip("/") + args.path,
        headers={"Authorization": f"Bearer {args.token}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        sys.stdout.write(response.read().decode() + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sitelab")
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage")
    for name in ("coordinator", "token", "site", "manifest"):
        stage.add_argument(name)
    get = sub.add_parser("get")
    for name in ("coordinator", "token", "path"):
        get.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "stage":
        _stage(args)
    else:
        _get(args)


if __name__ == "__main__":
    main()
