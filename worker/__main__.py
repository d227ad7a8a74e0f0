"""``xwch-worker``: a volunteer worker.

xwch-worker [run] [--coordinator URL] [--token T] [--slots K] [--data DIR] [--site NAME]
            [--name NAME] [--spawn-coordinator --db URL [--spawn-listen ENDPOINT]
            [--spawn-after S] [--spawn-public-url URL]]
xwch-worker install --coordinator URL --token T [--data DIR] [--site NAME] [--name NAME]
            [--slots K] [PREFERENCES]
xwch-worker uninstall
xwch-worker status [--data DIR] [--json]

``run`` is the default command, so the plain flags of docs/cli.md keep working. ``run`` takes
what no flag gives from ``$XWCH_HOME/worker.toml`` (which ``install`` writes), and the
preferences from there too, re-read whenever the file changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import msgspec
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorProcess, IReactorTCP, IReactorTime
from twisted.internet.task import react

from xwch import add_version_flag
from xwch.config import Endpoint, read_toml, resolve_endpoint, xwch_home
from xwch.detached import launcher as detached_launcher
from xwch.errors import ConfigurationError
from xwch.http import make_http_client
from xwch.logs import start_logging
from xwch.member_list import keep_learning
from xwch.startup import freeze_what_is_loaded, stop_once_on_signals
from xwch.tls import StopOnMismatch, https_policy, pinned_token

from .benchmark import measure_performance
from .coordinator_starter import (
    DEFAULT_AFTER,
    DEFAULT_LISTEN,
    CoordinatorStarter,
    SpawnSettings,
)
from .host import probe_host
from .install import Setup, install, uninstall
from .install_check import InstallRefused, check_worker_token
from .link import RegistrationRefused
from .native_launcher import native_launcher_for_worker
from .preferences import KEYS, Preferences, load_preferences, parse_size
from .sites import nearest_site, tcp_round_trip
from .status import STATUS_FILE, ContactRecorder, format_status, is_running, read_status
from .trust import trusted_keys
from .volunteer import DEFAULT_MAX_CHECKPOINT, Volunteer

PROGRAM = "xwch-worker"
DEFAULT_COMMAND = "run"
COMMANDS = (DEFAULT_COMMAND, "install", "uninstall", "status")
CONFIG_NAME = "worker.toml"
# Exit statuses of docs/cli.md: 2 for usage, 3 when the coordinator refuses the credentials.
EXIT_NOT_RUNNING = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


@dataclass(frozen=True)
class RunSettings:
    endpoint: Endpoint
    slots: int | None
    data: Path
    site: str | None
    name: str | None
    preferences: Preferences
    config: Path
    spawn: SpawnSettings | None = None
    # Signed programs: the keys whose programs alone it runs (none: any program).
    trusted_keys: frozenset[str] = frozenset()
    # Stops the worker when a server shows another certificate than the token pins.
    on_mismatch: StopOnMismatch | None = None
    max_checkpoint: int = DEFAULT_MAX_CHECKPOINT


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slots", metavar="K", type=int, help="attempts run at once (default: the cores)"
    )
    parser.add_argument(
        "--data", metavar="DIR", type=Path, help="cache and work folders ($XWCH_HOME/worker)"
    )
    parser.add_argument(
        "--site", metavar="NAME", help="the site of the warehouses near this worker"
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="the name shown for this worker (default: the host name); tells apart several "
        "workers on one machine",
    )
    parser.add_argument(
        "--trust",
        metavar="KEY",
        action="append",
        default=[],
        help="run only programs signed by this key (ed25519:BASE64, as `xwch-client keys "
        "create` prints it); repeatable; else trusted_keys in worker.toml; none: any program",
    )
    parser.add_argument(
        "--max-checkpoint",
        metavar="SIZE",
        default="1GiB",
        help="the largest task checkpoint this worker saves, such as 200M or 2G (default 1GiB); "
        "a bigger one is not saved, with a warning in the task's log",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="An XWCH volunteer worker. With no command, runs it (see "
        f"{PROGRAM} run --help).",
    )
    add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        DEFAULT_COMMAND,
        prog=PROGRAM,
        help="run the worker in the foreground (the default command)",
        description="Run an XWCH volunteer worker in the foreground until SIGINT or SIGTERM, "
        "when it gives its running attempts back. Settings no flag gives come from "
        "$XWCH_HOME/worker.toml, and so do the preferences.",
    )
    run.add_argument("--coordinator", metavar="URL", help="the coordinator (or XWCH_COORDINATOR)")
    run.add_argument("--token", metavar="T", help="a token of role worker (or XWCH_TOKEN)")
    run.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the token alone on a line, kept out of process listings",
    )
    _add_worker_flags(run)
    spawn = run.add_argument_group(
        "starting a coordinator (trusted machines that may reach the store)"
    )
    spawn.add_argument(
        "--spawn-coordinator",
        action="store_true",
        help="when no coordinator answers for --spawn-after seconds, start one here on the "
        "store --db, and register with it",
    )
    spawn.add_argument("--db", metavar="URL", help="the store of the coordinator started")
    spawn.add_argument(
        "--spawn-listen",
        metavar="ENDPOINT",
        default=DEFAULT_LISTEN,
        help="where the coordinator started listens (default %(default)s)",
    )
    spawn.add_argument(
        "--spawn-after",
        metavar="S",
        type=float,
        default=DEFAULT_AFTER,
        help="seconds without an answer before starting one (default %(default)g)",
    )
    spawn.add_argument(
        "--spawn-public-url",
        metavar="URL",
        help="the URL others reach the coordinator started at (default: the address it "
        "listens on; give it when workers of other machines are to reach it)",
    )

    setup = commands.add_parser(
        "install",
        prog=f"{PROGRAM} install",
        help="set the worker up to start with your session",
        description="Write $XWCH_HOME/worker.toml and a service of the current user (a systemd "
        "user unit on Linux, a launchd agent on macOS), enabled to start with the session. "
        "Preferences can be changed later by editing worker.toml; the running worker applies "
        "them within seconds.",
    )
    setup.add_argument("--coordinator", metavar="URL", help="the coordinator")
    setup.add_argument("--token", metavar="T", help="a token of role worker")
    setup.add_argument(
        "--token-file", metavar="PATH", help="a file holding the token alone on a line"
    )
    _add_worker_flags(setup)
    prefs = setup.add_argument_group("preferences")
    for key in KEYS:
        prefs.add_argument(key.flag, dest=key.name, metavar=key.metavar, help=key.help)

    commands.add_parser(
        "uninstall",
        prog=f"{PROGRAM} uninstall",
        help="stop the worker and remove its service, configuration and data",
        description="Stop the worker's service and remove it, $XWCH_HOME/worker.toml and the "
        "worker's cache and work folders.",
    )
    status = commands.add_parser(
        "status",
        prog=f"{PROGRAM} status",
        help="what the worker is doing",
        description="What the worker running here is doing: its attempts, cache, limits in "
        "force and last contact with the coordinator. Exits 1 when no worker is running.",
    )
    status.add_argument("--data", metavar="DIR", type=Path, help="the worker's data folder")
    status.add_argument("--json", action="store_true", help="the status document as JSON")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with ``run`` assumed when no command is named."""
    parser = _parser()
    if argv and argv[0] in ("-h", "--help", "--version"):
        return parser.parse_args(argv)  # the whole program's: its commands, its release
    if not argv or argv[0] not in COMMANDS:
        argv = [DEFAULT_COMMAND, *argv]
    return parser.parse_args(argv)


def _usage_error(message: str) -> NoReturn:
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def _config() -> Path:
    return xwch_home() / CONFIG_NAME


def _config_values() -> dict[str, object]:
    try:
        return read_toml(_config())
    except ConfigurationError as e:
        _usage_error(str(e))


def _data_dir(flag: Path | None, values: dict[str, object]) -> Path:
    if flag is not None:
        return flag
    data = values.get("data")
    return Path(data) if isinstance(data, str) else xwch_home() / "worker"


def run_settings(args: argparse.Namespace) -> RunSettings:
    """Checked settings of ``run``; a usage error exits 2 with the reason."""
    try:
        endpoint = resolve_endpoint(
            args.coordinator,
            args.token,
            files=(CONFIG_NAME, "client.toml"),
            token_file=args.token_file,
        )
        preferences = load_preferences(_config())
    except ConfigurationError as e:
        _usage_error(str(e))
    values = _config_values()
    slots = args.slots if args.slots is not None else values.get("slots")
    if slots is not None and (not isinstance(slots, int) or slots < 1):
        _usage_error(f"--slots must be at least 1, not {slots}")
    data = _data_dir(args.data, values)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _usage_error(f"--data {data}: {e}")
    name = args.name if args.name is not None else values.get("name")
    site = args.site if args.site is not None else values.get("site")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        _usage_error("--name must not be empty")
    try:
        trusted = trusted_keys(args.trust, values.get("trusted_keys"), str(_config()))
        max_checkpoint = parse_size(args.max_checkpoint, "--max-checkpoint")
    except ConfigurationError as e:
        _usage_error(str(e))
    return RunSettings(
        endpoint=endpoint,
        slots=slots,
        data=data,
        site=site if isinstance(site, str) else None,
        name=name,
        preferences=preferences,
        config=_config(),
        spawn=spawn_settings(args),
        trusted_keys=trusted,
        max_checkpoint=max_checkpoint,
    )


def spawn_settings(args: argparse.Namespace) -> SpawnSettings | None:
    """How to start a coordinator (None: never); a usage error exits 2 with the reason."""
    if not args.spawn_coordinator:
        if args.db is not None:
            _usage_error("--db goes with --spawn-coordinator")
        return None
    if not args.db:
        _usage_error("--spawn-coordinator needs --db URL, the store of the coordinator started")
    if not args.spawn_after > 0:
        _usage_error(f"--spawn-after must be a positive number of seconds, not {args.spawn_after}")
    if not args.spawn_listen.strip():
        _usage_error("--spawn-listen must not be empty")
    public = args.spawn_public_url
    if public is not None and not public.startswith(("http://", "https://")):
        _usage_error(f"--spawn-public-url must start with http:// or https://, not {public!r}")
    return SpawnSettings(args.db, args.spawn_listen, args.spawn_after, public)


async def _run(reactor: IReactorCore, settings: RunSettings) -> None:
    clock = IReactorTime(reactor)
    stop_once_on_signals(reactor)
    host = probe_host()
    if settings.name is not None:
        host = replace(host, name=settings.name)
    facts = host.facts(settings.slots or host.cores, measure_performance(), settings.site)
    facts = msgspec.structs.replace(facts, trusted_keys=tuple(sorted(settings.trusted_keys)))
    # A token pinning the platform's certificate: every https:// link must show it.
    http = make_http_client(
        IReactorTCP(reactor), tls=https_policy(settings.endpoint.pin, settings.on_mismatch)
    )
    launcher = native_launcher_for_worker(settings.data / "bin")
    if launcher.path is None:
        print(
            f"{PROGRAM}: attempts start through the fork server (slower): no native launcher: "
            f"{launcher.reason}",
            file=sys.stderr,
            flush=True,
        )
    coordinator = ContactRecorder(
        http, settings.endpoint.url, settings.endpoint.token, clock, clock=clock.seconds
    )
    volunteer = Volunteer(
        clock,
        coordinator,
        http,
        settings.data,
        facts,
        settings.preferences,
        preferences_path=settings.config,
        locate_site=lambda: nearest_site(coordinator, tcp_round_trip(IReactorTCP(reactor), clock)),
        native_launcher=launcher.path,
        watch_others=True,
        max_checkpoint=settings.max_checkpoint,
    )
    # Registered before starting: SIGINT or SIGTERM stop the reactor, which gives back first.
    reactor.addSystemEventTrigger("before", "shutdown", volunteer.stopService)  # type: ignore[misc]
    if settings.spawn is not None:
        starter = CoordinatorStarter(
            clock,
            coordinator,
            detached_launcher(IReactorProcess(reactor)),
            settings.spawn,
            settings.data,
        )
        reactor.addSystemEventTrigger("before", "shutdown", starter.stopService)  # type: ignore[misc]
        starter.startService()
    volunteer.startService()
    try:
        worker_id = await volunteer.service.when_registered()
    except RegistrationRefused as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED) from None
    print(f"{PROGRAM} registered as {worker_id}", flush=True)
    # The other coordinators of the platform, to go to when this one dies.
    learning = keep_learning(clock, coordinator)
    reactor.addSystemEventTrigger("before", "shutdown", learning.stop)  # type: ignore[misc]
    # Until a signal stops the reactor.
    await Deferred()


def install_values(args: argparse.Namespace) -> dict[str, object]:
    """What ``install`` writes to worker.toml; a usage error exits 2 with the reason."""
    try:
        endpoint = resolve_endpoint(
            args.coordinator, args.token, files=(CONFIG_NAME,), token_file=args.token_file
        )
    except ConfigurationError as e:
        _usage_error(str(e))
    # The token as given, its pin included: the installed worker pins the certificate too.
    token = endpoint.token if endpoint.pin is None else pinned_token(endpoint.token, endpoint.pin)
    values: dict[str, object] = {"coordinator": endpoint.url, "token": token}
    if args.slots is not None:
        if args.slots < 1:
            _usage_error(f"--slots must be at least 1, not {args.slots}")
        values["slots"] = args.slots
    if args.data is not None:
        values["data"] = str(args.data.absolute())
    for name in ("site", "name"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.trust:
        try:
            values["trusted_keys"] = sorted(trusted_keys(args.trust, None, str(_config())))
        except ConfigurationError as e:
            _usage_error(str(e))
    for key in KEYS:
        raw = getattr(args, key.name)
        if raw is None:
            continue
        try:
            values[key.name] = key.toml_value(raw)
        except ConfigurationError as e:
            _usage_error(str(e))
    return values


def _install(values: dict[str, object]) -> None:
    """Check the coordinator and the token, then write worker.toml and the service: nothing
    is written for a worker that could not start."""
    url, token = str(values["coordinator"]), str(values["token"])
    try:
        name = check_worker_token(url, token)
    except InstallRefused as e:
        print(f"{PROGRAM}: {e}; nothing was installed", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED) from None
    print(f"the coordinator at {url} takes the token ({name or 'a worker token'})", flush=True)
    for line in install(Setup.current(xwch_home()), values):
        print(line)


def _status(args: argparse.Namespace) -> int:
    path = _data_dir(args.data, _config_values()) / STATUS_FILE
    doc = read_status(path)
    running, why = is_running(doc, time.time())
    if args.json:
        print(json.dumps({"running": running, "why": why, "status": doc}, indent=1))
    else:
        sys.stdout.write(format_status(doc, time.time(), running, why))
    return 0 if running else EXIT_NOT_RUNNING


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "install":
        _install(install_values(args))
        return
    if args.command == "uninstall":
        for line in uninstall(Setup.current(xwch_home())):
            print(line)
        return
    if args.command == "status":
        raise SystemExit(_status(args))
    settings = run_settings(args)
    start_logging()
    from twisted.internet import reactor as global_reactor

    mismatch = StopOnMismatch(PROGRAM, global_reactor.stop)
    settings = replace(settings, on_mismatch=mismatch)

    def run(reactor: IReactorCore) -> Deferred[None]:
        return Deferred.fromCoroutine(_run(reactor, settings))

    freeze_what_is_loaded()
    try:
        react(run)
    except SystemExit:
        if mismatch.message is not None:
            raise SystemExit(EXIT_REFUSED) from None
        raise


if __name__ == "__main__":
    main()
