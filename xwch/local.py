"""``xwch-local``: the whole platform on this machine, as separate processes on loopback.

Starts a coordinator (SQLite in ``$XWCH_HOME``; or several on one PostgreSQL store with
``--coordinators N --db URL``), M warehouses and N workers of K slots, writes
``$XWCH_HOME/client.toml`` so ``xwch-client`` needs no flags, prints the coordinator's URL on a
line of its own, and runs until SIGINT or SIGTERM, when it stops every process it started.

Each child tells its address on one line of standard output (``... listening on URL`` or
``xwch-worker registered as ID``); their logs go to ``$XWCH_HOME/logs/``, and
``$XWCH_HOME/local.json`` tells which process is which. A process that dies is reported on
standard error (its exit status or signal, and the end of its log) and started again by
Twisted's ProcessMonitor (xwch/localmonitor.py); one that dies before it was ever ready stops
everything (exit status 1). Wrong flags exit 2 before anything starts.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess

from xwch import add_version_flag
from xwch.config import DEFAULT_PORT, write_toml, xwch_home
from xwch.coordinator.scheduler import POLICIES, POLICY_LOCALITY
from xwch.errors import StartFailed
from xwch.localmonitor import Child, ChildMonitor
from xwch.startup import stop_once_on_signals
from xwch.tls import TLS_FOLDER, TlsFiles, fingerprint, make_self_signed, pinned_token

EXIT_USAGE = 2
EXIT_FAILED = 1

COORDINATOR_READY = "xwch-coordinator listening on"
WAREHOUSE_READY = "xwch-warehouse listening on"
WORKER_READY = "xwch-worker registered as"


class LocalPlatform:
    """The children of one xwch-local, started in dependency order, and what they said.

    Each needs the address of the one before (warehouses and workers the coordinator's), so
    they start in stages: the coordinator, then the warehouses, then the workers, each stage
    once the one before is ready. A child that dies later is started again by the monitor on
    the address it first got.
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        home: Path,
        out: IO[str],
        restart: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.home = home
        self.python = python
        self.url: str | None = None
        self.started = False
        # The certificate every part serves with --tls (None: plain HTTP).
        self.tls: TlsFiles | None = None
        self.monitor = ChildMonitor(reactor, out, restart=restart, on_ready=self._child_ready)

    def spawn(
        self,
        name: str,
        marker: str,
        args: Sequence[str],
        home: Path | None = None,
        token: str | None = None,
    ) -> Child:
        """Start ``python ARGS`` as ``name``, with ``XWCH_HOME`` set to ``home`` (default: the
        local run's own) and ``XWCH_TOKEN`` to ``token``: in the environment, a token is not
        shown by process listings, as it would be on the command line."""
        env = dict(os.environ)
        env["XWCH_HOME"] = str(self.home if home is None else home)
        if token is not None:
            env["XWCH_TOKEN"] = token
        env["PYTHONUNBUFFERED"] = "1"
        return self.monitor.add_child(
            name, marker, [self.python, *args], env, self.home / "logs" / f"{name}.log"
        )

    async def start(self, args: argparse.Namespace, tokens: dict[str, str]) -> str:
        """Start every child, write ``client.toml`` and ``local.json``; the coordinator's URL.

        Raises StartFailed (reported already) when a child dies or stays silent before it is
        ready; the caller stops the rest.
        """
        self.monitor.startService()
        coordinators = [self._coordinator(args, i) for i in range(1, args.coordinators + 1)]
        urls = await self.monitor.wait_ready(coordinators)
        for child, address in zip(coordinators, urls, strict=True):
            pin_address(child, address)
        self.url = urls[0]
        # Every part is given every coordinator: any one that answers is enough.
        url = ",".join(urls)
        warehouses = [
            self._warehouse(i, url, tokens["warehouse"], args)
            for i in range(1, args.warehouses + 1)
        ]
        for child, address in zip(
            warehouses, await self.monitor.wait_ready(warehouses), strict=True
        ):
            pin_address(child, address)
        host = socket.gethostname()
        workers = [
            self._worker(i, url, tokens["worker"], host, args) for i in range(1, args.workers + 1)
        ]
        await self.monitor.wait_ready(workers)
        write_toml(self.home / "client.toml", {"coordinator": url, "token": tokens["client"]})
        self.started = True
        self.write_state()
        return self.url

    def _coordinator(self, args: argparse.Namespace, number: int) -> Child:
        heartbeat = args.heartbeat_interval
        # The first on --port; the others of several on any free port.
        port = args.port if number == 1 else 0
        store = [] if args.db is None else ["--db", args.db, "--lease", str(args.lease)]
        if args.db is not None and args.groups is not None:
            store += ["--groups", str(args.groups)]
        return self.spawn(
            "coordinator" if number == 1 else f"coordinator-{number}",
            COORDINATOR_READY,
            [
                "-m",
                "xwch.coordinator",
                *store,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
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
                *(["--tls"] if self.tls is not None else []),
            ],
        )

    def _warehouse(self, i: int, url: str, token: str, args: argparse.Namespace) -> Child:
        return self.spawn(
            f"warehouse-{i}",
            WAREHOUSE_READY,
            [
                "-m",
                "xwch.warehouse",
                "--coordinator",
                url,
                "--data",
                str(self.home / f"warehouse-{i}"),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--site",
                _site(i, args.sites),
                *self._tls_flags(),
            ],
            token=token,
        )

    def _tls_flags(self) -> list[str]:
        """A warehouse serves the platform's certificate, the one the tokens pin."""
        if self.tls is None:
            return []
        return ["--tls", "--cert", str(self.tls.cert), "--key", str(self.tls.key)]

    def _worker(self, i: int, url: str, token: str, host: str, args: argparse.Namespace) -> Child:
        # Its own XWCH_HOME, in its own folder: a worker reads worker.toml there (and
        # client.toml), so the volunteer's own ~/.xwch/worker.toml, written by `xwch-worker
        # install`, would otherwise suspend these workers by that volunteer's preferences.
        folder = self.home / f"worker-{i}"
        return self.spawn(
            f"worker-{i}",
            WORKER_READY,
            [
                "-m",
                "xwch.worker",
                "--coordinator",
                url,
                "--slots",
                str(args.slots),
                "--data",
                str(folder),
                "--name",
                f"{host}-w{i}",
                "--site",
                _site(i, args.sites),
                *(["--max-checkpoint", args.max_checkpoint] if args.max_checkpoint else []),
            ],
            home=folder,
            token=token,
        )

    def _child_ready(self, child: Child) -> None:
        # A child started again has a new pid; local.json says so once it is ready.
        if self.started:
            self.write_state()

    async def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after STOP_TIMEOUT) and wait for them."""
        await self.monitor.stop()

    def write_state(self) -> None:
        """``$XWCH_HOME/local.json``: which process is which, for people and tests."""
        children = self.monitor.children

        def entries(prefix: str, key: str) -> list[dict[str, Any]]:
            return [
                {"name": c.name, "pid": c.pid, key: c.announced, "restarts": c.restarts}
                for c in children.values()
                if c.name.startswith(prefix)
            ]

        coordinator = children["coordinator"]
        state = {
            "coordinator": {
                "pid": coordinator.pid,
                "url": self.url,
                "restarts": coordinator.restarts,
            },
            "coordinators": entries("coordinator", "url"),
            "warehouses": entries("warehouse-", "url"),
            "workers": entries("worker-", "id"),
            "pid": os.getpid(),
        }
        path = self.home / "local.json"
        tmp = path.with_name("local.json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)


def pin_address(child: Child, url: str) -> None:
    """Have ``child`` started again on the address it got, so that others find it again."""
    port = url.rsplit(":", 1)[1]
    args = child.argv
    args[args.index("--listen") + 1] = f"tcp:{port}:interface=127.0.0.1"
    if child.marker == WAREHOUSE_READY and "--public-url" not in args:
        args += ["--public-url", url]


def _create_tokens(home: Path, db: str | None) -> dict[str, str]:
    from xwch.coordinator.token_admin import create_token
    from xwch.store.database import default_url

    folder = home / "coordinator"
    folder.mkdir(parents=True, exist_ok=True)
    url = db or default_url(folder)
    return {
        role: create_token(url, role, f"xwch-local {role}")
        for role in ("client", "worker", "warehouse")
    }


async def run(reactor: Any, args: argparse.Namespace, out: IO[str] = sys.stderr) -> None:
    home = xwch_home()
    home.mkdir(parents=True, exist_ok=True)
    stop_once_on_signals(reactor)
    platform = LocalPlatform(reactor, home, out, restart=not args.no_restart)
    # SIGINT/SIGTERM stop the reactor; shutdown waits for every child to stop first.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(platform.stop())
    )
    tokens = _create_tokens(home, args.db)
    if args.tls:
        # Made here, before the coordinator starts (it takes it from the same folder), so that
        # the tokens pin it; the warehouses serve it too.
        files = make_self_signed(home / "coordinator" / TLS_FOLDER)
        pin = fingerprint(files)
        tokens = {role: pinned_token(token, pin) for role, token in tokens.items()}
        platform.tls = files
    try:
        url = await platform.start(args, tokens)
    except StartFailed:
        # Reported already, with the end of the child's log.
        await platform.stop()
        raise SystemExit(EXIT_FAILED) from None
    print(url, flush=True)
    print(
        f"xwch-local: {args.warehouses} warehouse(s), {args.workers} worker(s) of {args.slots} "
        f"slot(s); xwch-client is configured ({home / 'client.toml'}); logs in {home / 'logs'}; "
        "Ctrl-C stops",
        file=out,
        flush=True,
    )
    await Deferred()  # until the reactor stops


def _site(number: int, sites: int) -> str:
    """The site of the ``number``-th warehouse or worker (from 1), in turn over ``sites``."""
    return "local" if sites == 1 else f"site-{(number - 1) % sites + 1}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the line says what is wrong, --help the rest.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xwch-local",
        description="Run the whole XWCH platform on this machine: a coordinator, warehouses and "
        "workers as separate processes on loopback, until Ctrl-C. A process that crashes is "
        "started again on the same address.",
    )
    add_version_flag(parser)
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
        "--coordinators",
        type=int,
        default=1,
        metavar="N",
        help="coordinators to start on one store (default 1; more need --db postgresql://...)",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="the coordinators' store (default: SQLite in $XWCH_HOME/coordinator)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=10.0,
        metavar="S",
        help="with --db: how long a silent coordinator keeps what it holds (default 10)",
    )
    parser.add_argument(
        "--groups",
        type=int,
        metavar="N",
        help="with --db: logical groups the coordinators share (default one per coordinator)",
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
    parser.add_argument(
        "--tls",
        action="store_true",
        help="every link over HTTPS, with one self-signed certificate the tokens pin",
    )
    parser.add_argument(
        "--max-checkpoint",
        metavar="SIZE",
        help="the largest task checkpoint the workers save (default: theirs, 1GiB)",
    )
    return parser


def flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, on one line; None when nothing is."""
    for name in ("workers", "slots", "warehouses", "sites", "replicas"):
        least = 0 if name == "workers" else 1
        value = getattr(args, name)
        if value < least:
            return f"--{name} must be at least {least}, not {value}"
    if args.coordinators < 1:
        return f"--coordinators must be at least 1, not {args.coordinators}"
    if args.coordinators > 1 and not (args.db or "").startswith("postgresql://"):
        return (
            f"--coordinators {args.coordinators}: several coordinators share one PostgreSQL "
            "store; give --db postgresql://..."
        )
    if args.groups is not None and (args.db is None or args.groups < 1):
        return "--groups: a positive number, with --db postgresql://..."
    for name in ("alive_interval", "heartbeat_interval", "scan_interval", "lease"):
        value = getattr(args, name)
        if not value > 0:
            return f"--{name.replace('_', '-')} must be a positive number of seconds, not {value}"
    if not 0 <= args.port <= 65535:
        return f"--port must be between 0 and 65535, not {args.port}"
    return port_problem(args.port)


def port_problem(port: int) -> str | None:
    """Why the coordinator could not listen on ``port`` of 127.0.0.1; None if it could.

    Asked before anything starts; something may still take the port before the coordinator
    listens, and then its death is reported as any other.
    """
    if port == 0:
        return None
    with socket.socket() as probe:
        # As Twisted's listening ports do: connections of a platform just stopped (TIME_WAIT)
        # do not keep a new one from listening.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (
                    f"--port {port}: the port is in use on 127.0.0.1 (another xwch-local or "
                    "coordinator?); give another, or --port 0 for any free one"
                )
            return f"--port {port}: cannot listen on 127.0.0.1:{port}: {e.strerror}"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    problem = flag_problem(args)
    if problem is not None:
        parser.exit(EXIT_USAGE, f"{parser.prog}: {problem}\n")
    from twisted.internet import task

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main()
