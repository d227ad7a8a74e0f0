"""``xwch-local``: the whole platform on this machine, as separate processes on loopback.

Starts a coordinator (SQLite in ``$XWCH_HOME``), M warehouses and N workers of K slots, writes
``$XWCH_HOME/client.toml`` so ``xwch-client`` needs no flags, prints the coordinator's URL on a
line of its own, and runs until SIGINT or SIGTERM, when it stops every process it started.

Each child tells its address on one line of standard output (``... listening on URL`` or
``xwch-worker registered as ID``); their logs go to ``$XWCH_HOME/logs/``, and
``$XWCH_HOME/local.json`` tells which process is which.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from xwch.config import DEFAULT_PORT, write_toml, xwch_home
from xwch.coordinator.scheduler import POLICIES, POLICY_LOCALITY

EXIT_USAGE = 2
EXIT_FAILED = 1

# How long a child may take to say it is ready, and to stop when asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# A crashed child is started again after this pause (long enough for its port to be free).
RESTART_DELAY = 1.0


class ChildProcess(protocol.ProcessProtocol):
    """One child: its first matching stdout line tells it is ready; its output goes to a log."""

    def __init__(self, name: str, ready_marker: str, log_path: Path) -> None:
        self.name = name
        self.ready_marker = ready_marker
        self.ready: Deferred[str] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.pid: int | None = None
        self.value: str | None = None
        self._buffer = b""
        self._log = log_path.open("ab")
        self.running = False

    def connectionMade(self) -> None:
        self.running = True
        assert self.transport is not None
        self.pid = self.transport.pid  # type: ignore[attr-defined]

    def outReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._log.flush()
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if not self.ready.called and text.startswith(self.ready_marker):
                self.value = text[len(self.ready_marker) :].strip()
                self.ready.callback(self.value)

    @property
    def log_fd(self) -> int:
        """The log file's descriptor, the child's standard error (opened to append)."""
        return self._log.fileno()

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self._log.close()
        code = getattr(reason.value, "exitCode", None)
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"{self.name} exited (status {code}) before it was ready")
            )
        self.ended.callback(code)

    def signal(self, name: str) -> None:
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except Exception:
                pass


@dataclass
class Supervised:
    """A process xwch-local keeps running: how to start it, and its current incarnation."""

    name: str
    marker: str
    args: list[str]
    current: ChildProcess | None = None
    restarts: int = 0


@dataclass
class LocalPlatform:
    reactor: Any
    home: Path
    python: str = sys.executable
    restart: bool = True
    processes: dict[str, Supervised] = field(default_factory=dict)
    stopping: bool = False
    url: str | None = None

    @property
    def children(self) -> list[ChildProcess]:
        return [p.current for p in self.processes.values() if p.current is not None]

    def spawn(self, name: str, marker: str, args: Sequence[str]) -> ChildProcess:
        supervised = self.processes.setdefault(name, Supervised(name, marker, list(args)))
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child = ChildProcess(name, marker, logs / f"{name}.log")
        env = dict(os.environ)
        env["XWCH_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        # Standard error (where the logs go) is the log file itself: relaying every log line
        # through this process cost it as much CPU as a warehouse's. Standard output still
        # comes here, for the line saying the child is ready.
        self.reactor.spawnProcess(
            child,
            self.python,
            [self.python, *supervised.args],
            env=env,
            childFDs={0: "w", 1: "r", 2: child.log_fd},
        )
        supervised.current = child
        child.ended.addCallback(self._ended, supervised, child)
        return child

    def _ended(self, code: int | None, supervised: Supervised, child: ChildProcess) -> None:
        if self.stopping or supervised.current is not child:
            return
        again = f"; restarting it in {RESTART_DELAY:.0f} s" if self.restart else ""
        print(
            f"xwch-local: {child.name} stopped unexpectedly (status {code}){again}; "
            f"see {self.home / 'logs'}",
            file=sys.stderr,
            flush=True,
        )
        if self.restart:
            self.reactor.callLater(RESTART_DELAY, self._respawn, supervised)

    def _respawn(self, supervised: Supervised) -> None:
        if self.stopping:
            return
        supervised.restarts += 1
        child = self.spawn(supervised.name, supervised.marker, supervised.args)
        child.ready.addCallbacks(lambda _: self.write_state(), lambda _: None)

    def pin_address(self, name: str, url: str) -> None:
        """Restart ``name`` on the address it got, so that others find it again."""
        supervised = self.processes[name]
        port = url.rsplit(":", 1)[1]
        args = supervised.args
        listen = args.index("--listen") + 1
        args[listen] = f"tcp:{port}:interface=127.0.0.1"
        if supervised.marker.startswith("xwch-warehouse") and "--public-url" not in args:
            args += ["--public-url", url]

    async def wait_ready(self, child: ChildProcess) -> str:
        def give_up() -> None:
            if not child.ready.called:
                child.ready.cancel()

        timeout = self.reactor.callLater(START_TIMEOUT, give_up)
        try:
            return await child.ready
        except defer.CancelledError:
            log = self.home / "logs" / f"{child.name}.log"
            raise RuntimeError(
                f"{child.name} did not start within {START_TIMEOUT:.0f} s; see {log}"
            ) from None
        finally:
            if timeout.active():
                timeout.cancel()

    async def stop(self) -> None:
        """SIGTERM every child (workers first, coordinator last), then SIGKILL stragglers."""
        self.stopping = True
        for child in reversed(self.children):
            child.signal("TERM")
        pending = [c.ended for c in self.children if c.running]
        if not pending:
            return
        killer = self.reactor.callLater(STOP_TIMEOUT, self._kill_all)
        await defer.DeferredList(pending)
        if killer.active():
            killer.cancel()

    def _kill_all(self) -> None:
        for child in self.children:
            child.signal("KILL")

    def write_state(self) -> None:
        """``$XWCH_HOME/local.json``: which process is which, for people and tests."""

        def entries(prefix: str, key: str) -> list[dict[str, Any]]:
            return [
                {"name": p.name, "pid": p.current.pid, key: p.current.value, "restarts": p.restarts}
                for p in self.processes.values()
                if p.name.startswith(prefix) and p.current is not None
            ]

        coordinator = self.processes["coordinator"]
        assert coordinator.current is not None
        state = {
            "coordinator": {
                "pid": coordinator.current.pid,
                "url": self.url,
                "restarts": coordinator.restarts,
            },
            "warehouses": entries("warehouse-", "url"),
            "workers": entries("worker-", "id"),
            "pid": os.getpid(),
        }
        path = self.home / "local.json"
        tmp = path.with_name("local.json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)


def _create_tokens(home: Path) -> dict[str, str]:
    from xwch.coordinator.__main__ import create_token
    from xwch.store.database import default_url

    folder = home / "coordinator"
    folder.mkdir(parents=True, exist_ok=True)
    url = default_url(folder)
    return {
        role: create_token(url, role, f"xwch-local {role}")
        for role in ("client", "worker", "warehouse")
    }


async def run(reactor: Any, args: argparse.Namespace) -> None:
    home = xwch_home()
    home.mkdir(parents=True, exist_ok=True)
    platform = LocalPlatform(reactor, home, restart=not args.no_restart)
    # SIGINT/SIGTERM stop the reactor; shutdown waits for every child to stop first.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.ensureDeferred(platform.stop())
    )
    try:
        url = await _start(platform, home, args)
    except RuntimeError as e:
        print(f"xwch-local: {e}", file=sys.stderr, flush=True)
        await platform.stop()
        raise SystemExit(EXIT_FAILED) from None
    print(url, flush=True)
    print(
        f"xwch-local: {args.warehouses} warehouse(s), {args.workers} worker(s) of {args.slots} "
        f"slot(s); xwch-client is configured ({home / 'client.toml'}); logs in {home / 'logs'}; "
        "Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    await Deferred()  # until the reactor stops


async def _start(platform: LocalPlatform, home: Path, args: argparse.Namespace) -> str:
    tokens = _create_tokens(home)
    heartbeat = args.heartbeat_interval
    coordinator = platform.spawn(
        "coordinator",
        "xwch-coordinator listening on",
        [
            "-m",
            "xwch.coordinator",
            "--listen",
            f"tcp:{args.port}:interface=127.0.0.1",
            "--alive-interval",
            str(args.alive_interval),
            "--heartbeat-interval",
            str(heartbeat),
            # Five missed heartbeats: a warehouse restarting is not taken for gone.
            "--warehouse-timeout",
            str(5 * heartbeat),
            "--scan-interval",
            str(args.scan_interval),
            "--scheduler",
            args.scheduler,
            "--replicas",
            str(args.replicas),
        ],
    )
    url = await platform.wait_ready(coordinator)
    platform.url = url
    platform.pin_address("coordinator", url)
    warehouses = [
        platform.spawn(
            f"warehouse-{i}",
            "xwch-warehouse listening on",
            [
                "-m",
                "xwch.warehouse",
                "--coordinator",
                url,
                "--token",
                tokens["warehouse"],
                "--data",
                str(home / f"warehouse-{i}"),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--site",
                _site(i, args.sites),
            ],
        )
        for i in range(1, args.warehouses + 1)
    ]
    for w in warehouses:
        platform.pin_address(w.name, await platform.wait_ready(w))
    host = socket.gethostname()
    workers = [
        platform.spawn(
            f"worker-{i}",
            "xwch-worker registered as",
            [
                "-m",
                "xwch.worker",
                "--coordinator",
                url,
                "--token",
                tokens["worker"],
                "--slots",
                str(args.slots),
                "--data",
                str(home / f"worker-{i}"),
                "--name",
                f"{host}-w{i}",
                "--site",
                _site(i, args.sites),
            ],
        )
        for i in range(1, args.workers + 1)
    ]
    for w in workers:
        await platform.wait_ready(w)
    write_toml(home / "client.toml", {"coordinator": url, "token": tokens["client"]})
    platform.write_state()
    return url


def _site(number: int, sites: int) -> str:
    """The site of the ``number``-th warehouse or worker (from 1), in turn over ``sites``."""
    return "local" if sites == 1 else f"site-{(number - 1) % sites + 1}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xwch-local",
        description="Run the whole XWCH platform on this machine: a coordinator, warehouses and "
        "workers as separate processes on loopback, until Ctrl-C. A process that crashes is "
        "started again on the same address.",
    )
    parser.add_argument(
        "--workers", type=int, default=2, metavar="N", help="workers to start (default 2)"
    )
    parser.add_argument(
        "--slots", type=int, default=2, metavar="K", help="slots of each worker (default 2)"
    )
    parser.add_argument(
        "--warehouses", type=int, default=2, metavar="M", help="warehouses to start (default 2)"
    )
    parser.add_argument(
        "--sites",
        type=int,
        default=1,
        metavar="S",
        help="sites to spread warehouses and workers over, in turn (default 1: all at site "
        "'local'; more: site-1, site-2...)",
    )
    parser.add_argument(
        "--scheduler",
        choices=POLICIES,
        default=POLICY_LOCALITY,
        help="the coordinator's scheduling policy (default locality)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        metavar="N",
        help="warehouses that should hold each object (default 2)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"coordinator port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between warehouses' heartbeats (default 2)",
    )
    parser.add_argument(
        "--scan-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between the coordinator's scanner rounds (default 2)",
    )
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="do not start again a process that stopped unexpectedly",
    )
    parser.add_argument(
        "--alive-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between workers' Work Alive signals (default 2)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("workers", "slots", "warehouses", "sites", "replicas"):
        if getattr(args, name) < (0 if name == "workers" else 1):
            parser.error(f"--{name} must be at least {0 if name == 'workers' else 1}")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    for name in ("alive_interval", "heartbeat_interval", "scan_interval"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    from twisted.internet import task

    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
