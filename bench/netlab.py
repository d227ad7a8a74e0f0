"""The network lab of the benchmarks and of the namespace test.

A :class:`Lab` is two private network namespaces (a client host and a server host) joined
through a third (a router) whose interfaces are shaped with ``tc`` (a token bucket of ``rate``
with a queue of ``latency``, MTU 1500 like an Ethernet link), and the processes started in them,
each reporting on standard output. It is removed, processes and all, when the ``with`` block
ends. Asked, the client's side of the router is a home network: a ``laptop`` (another device)
beside the client on the router's bridge, and the router answering UPnP as a home router does
(``miniupnpd``, Debian's package of the daemon many routers run), counting its Internet side;
the shaped link is then the home's line, between the router and an ISP's.

Run as a program, this module is one of those processes::

    python -m bench.netlab serve ROOT [--upload-cap R]         a warehouse without coordinator
    python -m bench.netlab fetch URL DIGEST SIZE DEST [...]     an XWCH download, paced
    python -m bench.netlab get URL DIGEST                       a plain whole-object GET
    python -m bench.netlab sink                                 counts the bytes of TCP flows
    python -m bench.netlab blast HOST PORT                      a bulk TCP flow, as fast as TCP goes

Each prints ``{"port": N}`` when it listens and then ``{"t": monotonic, "bytes": total}`` lines
(every ``--every`` seconds, or per packet with ``--packets``), so the harness measures rates
over any window from one clock (CLOCK_MONOTONIC is the same in every namespace).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Self

ROOT = Path(__file__).resolve().parent.parent
KEY = b"bench-capability-key-32-bytes!!!"
WAREHOUSE_ID = "wh-bench"
# What a shaped link is made of: 40 Mbit/s, Ethernet's MTU, and a queue of 400 ms (a home
# router's buffer, big enough for a bulk TCP flow to fill and for delay to be felt).
RATE = "40mbit"
RATE_BYTES = 5_000_000.0
LATENCY = "400ms"
BURST = "32kbit"
MTU = 1500


# -- whether the lab can run here ----------------------------------------------------------


def lab_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    name = f"xwch-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def qdisc_available(kind: str) -> bool:
    """Whether this kernel has the queue discipline ``kind`` (tried in a namespace of its own:
    some kernels have few, and no modules to load)."""
    name = f"xwch-probe-{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        return False
    try:
        tried = subprocess.run(
            ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", kind],
            capture_output=True,
        )
        return tried.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def gateway_unavailable() -> str | None:
    """Why the lab's router cannot answer UPnP here (None: it can)."""
    if shutil.which("miniupnpd") is None:
        return "miniupnpd is not installed (apt-get install miniupnpd)"
    return None


def congestion_available(name: str) -> bool:
    """Whether TCP congestion control ``name`` (``bbr``) is built in or loaded."""
    try:
        listed = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text()
    except OSError:
        return False
    return name in listed.split()


# -- the lab -------------------------------------------------------------------------------


class Child:
    """A process in the lab; its report lines are gathered by a thread."""

    def __init__(self, name: str, popen: subprocess.Popen[str]) -> None:
        self.name = name
        self.popen = popen
        self.samples: list[tuple[float, int]] = []
        self.events: list[dict[str, Any]] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "port" in doc:
                self.port = int(doc["port"])
                self._ready.set()
            elif "bytes" in doc:
                self.samples.append((float(doc["t"]), int(doc["bytes"])))
            else:
                self.events.append(doc)
        self._ready.set()

    def wait_port(self, timeout: float = 20.0) -> int:
        self._ready.wait(timeout)
        if self.port is None:
            raise RuntimeError(f"{self.name} did not start: {self.stderr()}")
        return self.port

    def stderr(self) -> str:
        if self.popen.poll() is None or self.popen.stderr is None:
            return "(still running)"
        return self.popen.stderr.read()[-2000:]

    def bytes_at(self, t: float) -> float:
        """Bytes counted by time ``t``, interpolated between two reports."""
        samples = list(self.samples)
        if not samples:
            return 0.0
        i = bisect.bisect_left(samples, (t, -1))
        if i == 0:
            return float(samples[0][1])
        if i >= len(samples):
            return float(samples[-1][1])
        (t0, b0), (t1, b1) = samples[i - 1], samples[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else float(b1)

    def rate(self, start: float, end: float) -> float:
        """Bytes per second over [start, end]."""
        return (self.bytes_at(end) - self.bytes_at(start)) / (end - start)

    def stop(self) -> None:
        stop_process(self.popen)


def stop_process(popen: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


class Daemon:
    """A process in the lab that reports nothing (its output goes to a file)."""

    def __init__(self, popen: subprocess.Popen[Any]) -> None:
        self.popen = popen

    def stop(self) -> None:
        stop_process(self.popen)


class Stoppable(Protocol):
    """What a lab stops when it closes: :class:`Child`, or a bench's own process wrapper."""

    def stop(self) -> None: ...


class Namespaces:
    """Private network namespaces ``xwch-lab-TAG-ROLE``, one per role, and the processes
    started in them (``children``, stopped in reverse order, then the namespaces deleted) when
    the ``with`` block ends. Subclasses wire them (veths, addresses, ``tc``)."""

    def __init__(self, roles: Sequence[str]) -> None:
        tag = secrets.token_hex(3)
        self.names = {role: f"xwch-lab-{tag}-{role}" for role in roles}
        self.children: list[Stoppable] = []
        try:
            for name in self.names.values():
                self._run("ip", "netns", "add", name)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _run(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def exec(self, side: str, *argv: str) -> str:
        """Run ``argv`` to its end in the namespace of ``side``; its standard output."""
        return self._run("ip", "netns", "exec", self.names[side], *argv)

    def popen(
        self, side: str, argv: Sequence[str], root: Path = ROOT, **kwargs: Any
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in the namespace of ``side``, with the checkout ``root`` (this one
        unless told) on PYTHONPATH."""
        env = dict(kwargs.pop("env", os.environ), PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
        kwargs.setdefault("cwd", str(root))
        return subprocess.Popen(
            ["ip", "netns", "exec", self.names[side], *argv], text=True, env=env, **kwargs
        )

    def link_bytes(self, side: str) -> dict[str, tuple[int, int]]:
        """Bytes (received, sent) by each interface of ``side``'s namespace, from its counters."""
        links = json.loads(self._run("ip", "-n", self.names[side], "-j", "-s", "link", "show"))
        return {
            link["ifname"]: (
                int(link["stats64"]["rx"]["bytes"]),
                int(link["stats64"]["tx"]["bytes"]),
            )
            for link in links
        }

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children = []
        # Deleting a namespace deletes its interfaces, and a veth's peer with it.
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Lab(Namespaces):
    """Two hosts joined by a shaped link: ``client`` and ``server`` namespaces on either side of
    a ``router`` namespace whose two interfaces each send at ``rate`` through a queue of
    ``latency`` (a token bucket filter).

    Why a router: a queue a delay-based sender can sense is a bottleneck's buffer. Shaping the
    sending host's own interface (or loopback) does not make one: Linux's TCP Small Queues keep
    a sender's own qdisc nearly empty, a millisecond of data per flow. Forwarded packets are
    nobody's: in the router's qdisc a bulk TCP flow builds the standing queue it builds at a
    home router or a congested uplink.
    """

    CLIENT_ADDRESS = "10.77.1.1"
    LAPTOP_ADDRESS = "10.77.1.2"
    SERVER_ADDRESS = "10.77.2.1"
    ROUTER_LAN = "10.77.1.254"

    def __init__(
        self,
        rate: str | None = RATE,
        latency: str = LATENCY,
        burst: str = BURST,
        mtu: int = MTU,
        aqm: bool = False,
        home: bool = False,
    ) -> None:
        """``aqm``: the router shapes with htb and queues with fq_codel, as a home router with
        smart queue management does (flows queued apart, each queue kept near 5 ms), instead of
        one deep token-bucket queue of ``latency``. ``home``: the client is one device of a
        home network, a ``laptop`` beside it behind the same router, which answers UPnP
        (:meth:`start_gateway`), and an ISP's router between it and the server (see
        :meth:`_wire_home`)."""
        roles = ("client", "router", "server") + (("laptop", "isp") if home else ())
        super().__init__(roles)
        self.home = home
        try:
            self._wire(rate, latency, burst, mtu, aqm)
        except BaseException:
            self.close()
            raise

    def _wire(self, rate: str | None, latency: str, burst: str, mtu: int, aqm: bool) -> None:
        if self.home:
            self._wire_home(rate, latency, burst, mtu, aqm)
            return
        client, router, server = (self.names[s] for s in ("client", "router", "server"))
        # Interface names are per namespace: the same short names in every lab.
        self._run("ip", "link", "add", "c0", "netns", client, "type", "veth",
                  "peer", "name", "r0", "netns", router)  # fmt: skip
        self._run("ip", "link", "add", "s0", "netns", server, "type", "veth",
                  "peer", "name", "r1", "netns", router)  # fmt: skip
        self._hosts(
            mtu,
            ("client", "c0", f"{self.CLIENT_ADDRESS}/24", self.ROUTER_LAN),
            ("server", "s0", f"{self.SERVER_ADDRESS}/24", "10.77.2.254"),
        )
        self.exec("router", "ip", "link", "set", "lo", "up")
        for dev, address in (("r0", f"{self.ROUTER_LAN}/24"), ("r1", "10.77.2.254/24")):
            self.exec("router", "ip", "link", "set", dev, "mtu", str(mtu), "up")
            self.exec("router", "ip", "addr", "add", address, "dev", dev)
            self._shape("router", dev, rate, latency, burst, aqm)
        self.exec("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def _wire_home(self, rate: str | None, latency: str, burst: str, mtu: int, aqm: bool) -> None:
        """client and laptop on the home router's bridge; the router's Internet side (``r1``)
        to an ISP's router, whose queue towards the home is the bottleneck of downloads (a
        modem's line: its drops never reach the home router's counters), and the server
        beyond it; the home router's own queue towards the ISP, the bottleneck of uploads."""
        n = self.names
        self._run("ip", "link", "add", "c0", "netns", n["client"], "type", "veth",
                  "peer", "name", "r0", "netns", n["router"])  # fmt: skip
        self._run("ip", "link", "add", "l0", "netns", n["laptop"], "type", "veth",
                  "peer", "name", "r2", "netns", n["router"])  # fmt: skip
        self._run("ip", "link", "add", "r1", "netns", n["router"], "type", "veth",
                  "peer", "name", "i1", "netns", n["isp"])  # fmt: skip
        self._run("ip", "link", "add", "s0", "netns", n["server"], "type", "veth",
                  "peer", "name", "i0", "netns", n["isp"])  # fmt: skip
        self._hosts(
            mtu,
            ("client", "c0", f"{self.CLIENT_ADDRESS}/24", self.ROUTER_LAN),
            ("laptop", "l0", f"{self.LAPTOP_ADDRESS}/24", self.ROUTER_LAN),
            ("server", "s0", f"{self.SERVER_ADDRESS}/24", "10.77.2.254"),
            ("router", "r1", "10.77.3.1/24", "10.77.3.254"),
        )
        # The home's devices on one bridge, the router's LAN side.
        self.exec("router", "ip", "link", "add", "br0", "type", "bridge")
        for port in ("r0", "r2"):
            self.exec("router", "ip", "link", "set", port, "mtu", str(mtu), "master", "br0")
            self.exec("router", "ip", "link", "set", port, "up")
        self.exec("router", "ip", "link", "set", "br0", "mtu", str(mtu), "up")
        self.exec("router", "ip", "addr", "add", f"{self.ROUTER_LAN}/24", "dev", "br0")
        self.exec("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._shape("router", "r1", rate, latency, burst, aqm)
        self.exec("isp", "ip", "link", "set", "lo", "up")
        for dev, address in (("i0", "10.77.2.254/24"), ("i1", "10.77.3.254/24")):
            self.exec("isp", "ip", "link", "set", dev, "mtu", str(mtu), "up")
            self.exec("isp", "ip", "addr", "add", address, "dev", dev)
        self.exec("isp", "ip", "route", "add", "10.77.1.0/24", "via", "10.77.3.1")
        self.exec("isp", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._shape("isp", "i1", rate, latency, burst, aqm)

    def _hosts(self, mtu: int, *plan: tuple[str, str, str, str]) -> None:
        """Each (side, device, address, gateway): the device up with its address and the
        default route through the gateway."""
        for side, dev, address, gateway in plan:
            self.exec(side, "ip", "link", "set", "lo", "up")
            self.exec(side, "ip", "link", "set", dev, "mtu", str(mtu), "up")
            self.exec(side, "ip", "addr", "add", address, "dev", dev)
            self.exec(side, "ip", "route", "add", "default", "via", gateway)

    def _shape(
        self, side: str, dev: str, rate: str | None, latency: str, burst: str, aqm: bool
    ) -> None:
        """What ``dev`` of ``side`` sends goes at ``rate`` through its queue (see __init__)."""
        if rate is not None and aqm:
            self.exec(side, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:",
                      "htb", "default", "1")  # fmt: skip
            self.exec(side, "tc", "class", "add", "dev", dev, "parent", "1:",
                      "classid", "1:1", "htb", "rate", rate, "ceil", rate)  # fmt: skip
            self.exec(side, "tc", "qdisc", "add", "dev", dev, "parent", "1:1",
                      "fq_codel")  # fmt: skip
        elif rate is not None:
            self.exec(side, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                      "rate", rate, "burst", burst, "latency", latency)  # fmt: skip

    def start_gateway(self, config_dir: Path) -> None:
        """The router answers UPnP on the home's side, counting its Internet side (``r1``), as
        a home router running miniupnpd does; stopped with the lab."""
        assert self.home, "a gateway needs the home network (home=True)"
        config = config_dir / "miniupnpd.conf"
        config.write_text(
            "ext_ifname=r1\n"
            "listening_ip=br0\n"
            "port=0\n"
            "enable_upnp=yes\n"
            "enable_natpmp=no\n"
            "secure_mode=yes\n"
            "system_uptime=yes\n"
            f"uuid=00000000-0000-4000-8000-{secrets.token_hex(6)}\n"
            "deny 0-65535 0.0.0.0/0 0-65535\n"
        )
        log = config_dir / "miniupnpd.log"
        with log.open("w") as out:
            popen = self.popen(
                "router",
                ["miniupnpd", "-d", "-f", str(config), "-P", str(config_dir / "miniupnpd.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.children.append(Daemon(popen))
        # Ready when it listens for the description's requests (on a port it picks).
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"miniupnpd did not start: {log.read_text()[-2000:]}")
            if "miniupnpd" in self.exec("router", "ss", "-ltnpH"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"miniupnpd did not listen within 10 s: {log.read_text()[-2000:]}")

    def spawn(self, side: str, name: str, *args: str, root: Path = ROOT) -> Child:
        """``python -m bench.netlab ARGS`` in the namespace of ``side`` (client, laptop, server), from
        the checkout ``root`` (another one: a benchmark's baseline, the code before a change)."""
        popen = self.popen(
            side,
            [sys.executable, "-m", "bench.netlab", *args],
            root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child = Child(name, popen)
        self.children.append(child)
        return child


def make_object(root: Path, size: int, seed: int = 1) -> tuple[str, int]:
    """A stored object of ``size`` pseudo-random (incompressible, reproducible) bytes in the
    warehouse folder ``root``."""
    import random

    rng = random.Random(seed)
    hasher = hashlib.sha256()
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / "bench.tmp"
    with tmp.open("wb") as f:
        left = size
        while left > 0:
            block = rng.randbytes(min(left, 16 << 20))
            hasher.update(block)
            f.write(block)
            left -= len(block)
    digest = hasher.hexdigest()
    path = root / "objects" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(path)
    return digest, size


def sliding_rates(
    events: Sequence[tuple[float, int]], start: float, end: float, step: float = 0.01
) -> list[float]:
    """Bytes in every one-second window [t, t+1) from ``start`` to ``end``."""
    import itertools

    times = [t for t, _ in events]
    totals = list(itertools.accumulate((n for _, n in events), initial=0))
    rates = []
    t = start
    while t + 1.0 <= end + 1e-9:
        rates.append(
            float(totals[bisect.bisect_left(times, t + 1.0)] - totals[bisect.bisect_left(times, t)])
        )
        t += step
    return rates


# -- the processes -------------------------------------------------------------------------


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _serve(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import succeed
    from twisted.python.threadpool import ThreadPool

    from xwch.warehouse.blocking import ThreadPoolRunner
    from xwch.warehouse.node import _QuietSite
    from xwch.warehouse.objects import ObjectStore
    from xwch.warehouse.routes import Registration, WarehouseResource

    class Catalog:
        def objects_stored(self, refs: Any) -> Any:
            return succeed(None)

    pool = ThreadPool(0, 4, name="bench-warehouse")
    pool.start()
    store = ObjectStore(Path(args.root))
    resource = WarehouseResource(store, Catalog(), reactor, ThreadPoolRunner(reactor, pool))
    resource.registration = Registration(WAREHOUSE_ID, KEY, 30.0)
    resource.network.upload.set_rate(args.upload_cap)
    resource.network.download.set_rate(args.download_cap)
    port = reactor.listenTCP(args.port, _QuietSite(resource), interface=args.host)
    _say({"port": port.getHost().port})
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    pool.stop()


def _fetch(args: argparse.Namespace) -> None:
    from twisted.internet import reactor, task
    from twisted.internet.defer import ensureDeferred

    from xwch import capability
    from xwch.http import make_http_client
    from xwch.logs import start_logging
    from xwch.protocol.objects import Source
    from xwch.protocol.worker import Policy
    from xwch.transfer import PacketPacer, download_object
    from xwch.transfer.meter import host_interface_counters

    start_logging("info")

    pacer = PacketPacer(
        Policy(packet_size=args.packet_size, max_transfers=4),
        None,
        reactor,
        download_cap=args.download_cap,
        interface=host_interface_counters if args.watch else None,
        watch_others=args.watch,
    )
    if args.watch_gateway:
        from twisted.internet.threads import deferToThread

        pacer.watch_gateway(deferToThread)
    meter = pacer.meter
    if args.packets:
        record = meter.record

        def record_and_say(peer: str, sent: int, received: int, duration: float, rtt: Any) -> None:
            record(peer, sent, received, duration, rtt)
            _say({"t": time.monotonic(), "bytes": meter.total_received})

        meter.record = record_and_say  # type: ignore[method-assign]
    else:
        ticker = task.LoopingCall(
            lambda: _say({"t": time.monotonic(), "bytes": meter.total_received})
        )
        ticker.start(args.every)
    watches = [w for w in (pacer.others, pacer.gateway) if w is not None]
    if watches:
        # What the watches judge, a tenth of a second at a time: the bench tells from it how
        # long XWCH made way, and whether it ever did so alone.
        watch = task.LoopingCall(
            lambda: _say(
                {
                    "watch": time.monotonic(),
                    "others": max(w.rates[1] for w in watches),
                    "present": any([w.present(1) for w in watches]),
                }
            )
        )
        watch.start(0.1)
    http = make_http_client(reactor)
    cap = capability.issue(KEY, capability.OP_GET, args.digest, WAREHOUSE_ID, time.time() + 3600)

    async def run() -> None:
        started = time.monotonic()
        await download_object(
            http,
            [Source(args.url, cap)],
            args.digest,
            args.size,
            Path(args.dest),
            pacer,
            reactor,
            durable=args.durable,
        )
        _say({"t": time.monotonic(), "bytes": meter.total_received})
        _say({"done": True, "seconds": time.monotonic() - started})

    def main(reactor: Any) -> Any:
        signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
        return ensureDeferred(run())

    task.react(main)


def _sink(args: argparse.Namespace) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(8)
    _say({"port": server.getsockname()[1]})
    total = 0
    lock = threading.Lock()

    def drain(conn: socket.socket) -> None:
        nonlocal total
        with conn:
            while data := conn.recv(1 << 16):
                with lock:
                    total += len(data)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        with lock:
            _say({"t": time.monotonic(), "bytes": total})
        time.sleep(args.every)


def _get(args: argparse.Namespace) -> None:
    """A plain HTTP client: one whole-object GET, its body counted as it comes off the socket."""
    import urllib.parse

    from xwch import capability

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    url = urllib.parse.urlsplit(args.url)
    cap = capability.issue(KEY, capability.OP_GET, args.digest, WAREHOUSE_ID, time.time() + 3600)
    with socket.create_connection((url.hostname, url.port)) as conn:
        conn.sendall(
            f"GET /objects/{args.digest} HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"X-Xwch-Capability: {cap}\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        total = len(head.split(b"\r\n\r\n", 1)[1])
        last = 0.0
        while data := conn.recv(1 << 16):
            total += len(data)
            now = time.monotonic()
            if now - last >= args.every:
                _say({"t": now, "bytes": total})
                last = now
        _say({"t": time.monotonic(), "bytes": total})


def _blast(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    block = b"\0" * (1 << 16)
    conn = socket.socket()
    # CUBIC by default, Linux's default: a bulk flow that fills the queue, as most do (a host may
    # default to BBR, which keeps queues short and is not what a shared link mostly meets).
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.congestion.encode())
    conn.connect((args.host, args.port))
    with conn:
        _say({"port": 0})
        _say({"started": time.monotonic()})
        while True:
            conn.sendall(block)


# A datagram of the constant-rate flow: its sequence number and when it was sent (monotonic).
_DATAGRAM = struct.Struct("!Qd")


def _udp_send(args: argparse.Namespace) -> None:
    """A constant-rate UDP flow, as a video call sends: ``--size`` bytes every size/rate s."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    gap = args.size / args.rate
    pad = b"\0" * (args.size - _DATAGRAM.size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
        started = time.monotonic()
        _say({"port": 0})
        _say({"started": started})
        seq = 0
        while True:
            # On a schedule, not a sleep per datagram: a late wake-up is caught up, so the
            # rate holds on a loaded machine.
            due = started + seq * gap
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            conn.sendto(_DATAGRAM.pack(seq, time.monotonic()) + pad, (args.host, args.port))
            seq += 1


def _udp_sink(args: argparse.Namespace) -> None:
    """Receives the constant-rate flow: bytes as ``{"t", "bytes"}`` lines, and every datagram
    as ``[seq, sent, received]`` in ``{"udp": [...]}`` lines, for loss, delay and jitter."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((args.host, args.port))
    _say({"port": server.getsockname()[1]})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.settimeout(args.every)
    total = 0
    heard: list[list[float]] = []
    last = time.monotonic()
    while True:
        try:
            data = server.recv(1 << 16)
        except TimeoutError:
            data = b""
        now = time.monotonic()
        if len(data) >= _DATAGRAM.size:
            total += len(data)
            seq, sent = _DATAGRAM.unpack_from(data)
            heard.append([seq, sent, now])
        if now - last >= args.every:
            _say({"t": now, "bytes": total})
            if heard:
                _say({"udp": heard})
                heard = []
            last = now


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netlab")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("root")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--upload-cap", type=float)
    serve.add_argument("--download-cap", type=float)
    fetch = sub.add_parser("fetch")
    fetch.add_argument("url")
    fetch.add_argument("digest")
    fetch.add_argument("size", type=int)
    fetch.add_argument("dest")
    fetch.add_argument("--packet-size", type=int, default=1024 * 1024)
    fetch.add_argument("--download-cap", type=float)
    fetch.add_argument("--every", type=float, default=0.1)
    fetch.add_argument("--packets", action="store_true")
    # The worker's cache downloads without fsync (worker/crashsafe.py); --durable as warehouses.
    fetch.add_argument("--durable", action="store_true")
    # Watch the host's interface counters for others' traffic, as a worker does.
    fetch.add_argument("--watch", action="store_true")
    # ... and the home router's counters, found over UPnP, as a worker does.
    fetch.add_argument("--watch-gateway", action="store_true")
    sink = sub.add_parser("sink")
    sink.add_argument("--host", default="0.0.0.0")
    sink.add_argument("--port", type=int, default=0)
    sink.add_argument("--every", type=float, default=0.1)
    get = sub.add_parser("get")
    get.add_argument("url")
    get.add_argument("digest")
    get.add_argument("--every", type=float, default=0.005)
    blast = sub.add_parser("blast")
    blast.add_argument("host")
    blast.add_argument("port", type=int)
    blast.add_argument("--congestion", default="cubic")
    udp_send = sub.add_parser("udp-send")
    udp_send.add_argument("host")
    udp_send.add_argument("port", type=int)
    udp_send.add_argument("--rate", type=float, default=500_000.0)
    udp_send.add_argument("--size", type=int, default=1000)
    udp_sink = sub.add_parser("udp-sink")
    udp_sink.add_argument("--host", default="0.0.0.0")
    udp_sink.add_argument("--port", type=int, default=0)
    udp_sink.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args(argv)
    commands = {
        "serve": _serve,
        "fetch": _fetch,
        "sink": _sink,
        "get": _get,
        "blast": _blast,
        "udp-send": _udp_send,
        "udp-sink": _udp_sink,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
