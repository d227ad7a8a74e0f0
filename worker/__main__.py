"""``xwch-worker``: a volunteer worker in the foreground.

xwch-worker [run] [--coordinator URL] [--token T] [--slots K] [--data DIR] [--site NAME]
            [--name NAME]

``run`` is the default command, so the plain flags of spec/cli.md keep working when more
commands (``install``, ``uninstall``) join it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.task import react

from xwch.config import Endpoint, resolve_endpoint, xwch_home
from xwch.errors import ConfigurationError
from xwch.http import JsonApi, make_http_client
from xwch.logs import start_logging

from .benchmark import measure_performance
from .host import probe_host
from .service import RegistrationRefused, make_worker_service

PROGRAM = "xwch-worker"
DEFAULT_COMMAND = "run"
# Exit statuses of spec/cli.md: 2 for usage, 3 when the coordinator refuses the credentials.
EXIT_USAGE = 2
EXIT_REFUSED = 3


@dataclass(frozen=True)
class RunSettings:
    endpoint: Endpoint
    slots: int | None
    data: Path
    site: str | None
    name: str | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="An XWCH volunteer worker.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        DEFAULT_COMMAND,
        prog=PROGRAM,
        help="run the worker in the foreground (the default command)",
        description="Run an XWCH volunteer worker in the foreground until SIGINT or SIGTERM, "
        "when it gives its running attempts back.",
    )
    run.add_argument("--coordinator", metavar="URL", help="the coordinator (or XWCH_COORDINATOR)")
    run.add_argument("--token", metavar="T", help="a token of role worker (or XWCH_TOKEN)")
    run.add_argument(
        "--slots", metavar="K", type=int, help="attempts run at once (default: the cores)"
    )
    run.add_argument(
        "--data", metavar="DIR", type=Path, help="cache and work folders ($XWCH_HOME/worker)"
    )
    run.add_argument("--site", metavar="NAME", help="the site of the warehouses near this worker")
    run.add_argument(
        "--name",
        metavar="NAME",
        help="the name shown for this worker (default: the host name); tells apart several "
        "workers on one machine",
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with ``run`` assumed when no command is named."""
    parser = _parser()
    commands = {DEFAULT_COMMAND}
    if not argv or argv[0] not in commands:
        argv = [DEFAULT_COMMAND, *argv]
    return parser.parse_args(argv)


def _usage_error(message: str) -> NoReturn:
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def run_settings(args: argparse.Namespace) -> RunSettings:
    """Checked settings of ``run``; a usage error exits 2 with the reason."""
    try:
        endpoint = resolve_endpoint(
            args.coordinator, args.token, files=("worker.toml", "client.toml")
        )
    except ConfigurationError as e:
        _usage_error(str(e))
    if args.slots is not None and args.slots < 1:
        _usage_error(f"--slots must be at least 1, not {args.slots}")
    data: Path = args.data if args.data is not None else xwch_home() / "worker"
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _usage_error(f"--data {data}: {e}")
    if args.name is not None and not args.name.strip():
        _usage_error("--name must not be empty")
    return RunSettings(
        endpoint=endpoint, slots=args.slots, data=data, site=args.site, name=args.name
    )


async def _run(reactor: IReactorCore, settings: RunSettings) -> None:
    clock = IReactorTime(reactor)
    host = probe_host()
    if settings.name is not None:
        host = replace(host, name=settings.name)
    facts = host.facts(settings.slots or host.cores, measure_performance(), settings.site)
    http = make_http_client(IReactorTCP(reactor))
    coordinator = JsonApi(http, settings.endpoint.url, settings.endpoint.token, clock)
    service = make_worker_service(clock, coordinator, http, settings.data, facts)
    # Registered before starting: SIGINT or SIGTERM stop the reactor, which gives back first.
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[misc]
    service.startService()
    try:
        worker_id = await service.when_registered()
    except RegistrationRefused as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED) from None
    print(f"{PROGRAM} registered as {worker_id}", flush=True)
    # Until a signal stops the reactor.
    await Deferred()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = run_settings(args)
    start_logging()

    def run(reactor: IReactorCore) -> Deferred[None]:
        return Deferred.fromCoroutine(_run(reactor, settings))

    react(run)


if __name__ == "__main__":
    main()
