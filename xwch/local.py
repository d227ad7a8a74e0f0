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

EXIT_USAGE = 2
EXIT_FAILED = 1

# How long a child may take to say it is ready, and to stop when asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


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

    def errReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._log.flush()

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
class LocalPlatform:
    reactor: Any
    home: Path
    python: str = sys.executable
    children: list[ChildProcess] = field(default_factory=list)
    stopping: bool = False

    def spawn(
        self, name: str, marker: str, args: Sequence[str], env_extra: dict[str, str] | None = None
    ) -> ChildProcess:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child = ChildProcess(name, marker, logs / f"{name}.log")
        env = dict(os.environ)
        env["XWCH_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(env_extra or {})
        argv = [self.python, *args]
        self.reactor.spawnProcess(child, self.python, argv, env=env)
        self.children.append(child)
        return child

    async def wait_ready(self, child: ChildProcess) -> str:
        def give_up() -> None:
            if not child.ready.called:
                child.ready.cancel()

        timeout = self.reactor.callLater(START_TIMEOUT, give_up)
        try:
            return await child.ready
        except defer.CancelledError:
            raise RuntimeError(
                f"{child.name} did not start within {START_TIMEOUT:.0f} s; see {self.home / 'logs' / (child.name + '.log')}"
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
    platform = LocalPlatform(reactor, home)
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
    for child in platform.children:
        child.ended.addCallback(_report_unexpected_end, child, platform, home)
    await Deferred()  # until the reactor stops


def _report_unexpected_end(
    code: int | None, child: ChildProcess, platform: LocalPlatform, home: Path
) -> None:
    if not platform.stopping:
        print(
            f"xwch-local: {child.name} stopped unexpectedly (status {code}); see {home / 'logs'}",
            file=sys.stderr,
            flush=True,
        )


async def _start(platform: LocalPlatform, home: Path, args: argparse.Namespace) -> str:
    tokens = _create_tokens(home)
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
        ],
    )
    url = await platform.wait_ready(coordinator)
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
                "local",
            ],
        )
        for i in range(1, args.warehouses + 1)
    ]
    for w in warehouses:
        await platform.wait_ready(w)
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
                "local",
            ],
        )
        for i in range(1, args.workers + 1)
    ]
    for w in workers:
        await platform.wait_ready(w)
    write_toml(home / "client.toml", {"coordinator": url, "token": tokens["client"]})
    _write_state(home, url, coordinator, warehouses, workers)
    return url


def _write_state(
    home: Path,
    url: str,
    coordinator: ChildProcess,
    warehouses: list[ChildProcess],
    workers: list[ChildProcess],
) -> None:
    state = {
        "coordinator": {"pid": coordinator.pid, "url": url},
        "warehouses": [{"name": w.name, "pid": w.pid, "url": w.value} for w in warehouses],
        "workers": [{"name": w.name, "pid": w.pid, "id": w.value} for w in workers],
        "pid": os.getpid(),
    }
    (home / "local.json").write_text(json.dumps(state, indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xwch-local",
        description="Run the whole XWCH platform on this machine: a coordinator, warehouses and "
        "workers as separate processes on loopback, until Ctrl-C.",
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
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"coordinator port (default {DEFAULT_PORT}; 0 picks a free one)",
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
    for name in ("workers", "slots", "warehouses"):
        if getattr(args, name) < (0 if name == "workers" else 1):
            parser.error(f"--{name} must be at least {0 if name == 'workers' else 1}")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    from twisted.internet import task

    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
