"""``xwch-coordinator``: run the coordinator, or create credentials in its store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xwch import add_version_flag
from xwch.config import DEFAULT_PORT, xwch_home
from xwch.coordinator.members import DEFAULT_LEASE
from xwch.coordinator.scheduler import POLICIES, POLICY_LOCALITY
from xwch.coordinator.store_lock import StoreHeld, StoreLock, hold_store
from xwch.coordinator.token_admin import create_token, revoke_token, token_table
from xwch.errors import ConfigurationError
from xwch.protocol.wire import ROLES
from xwch.store.database import default_url
from xwch.tls import CERT_FILE, TLS_FOLDER, fingerprint_of_pem, pinned_token, tls_files

EXIT_USAGE = 2
# Each group held costs a member one more row locked per transaction (its fence): a few do.
MOST_GROUPS = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xwch-coordinator",
        description="The XWCH coordinator: workers' manager, tasks' manager, scheduler and "
        "communication manager behind a JSON API.",
    )
    add_version_flag(parser)
    parser.add_argument(
        "--db", metavar="URL", help="SQLAlchemy URL of the store (default: SQLite in --data)"
    )
    parser.add_argument(
        "--data", metavar="DIR", type=Path, help="data folder (default: $XWCH_HOME/coordinator)"
    )
    parser.add_argument(
        "--listen",
        metavar="ENDPOINT",
        default=f"tcp:{DEFAULT_PORT}",
        help="Twisted endpoint to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL workers, warehouses and clients reach this coordinator at "
        "(default: the address it listens on)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS, with a certificate made on the first start in --data/tls (tokens "
        "made afterwards pin it)",
    )
    parser.add_argument("--cert", metavar="PEM", help="with --key: the certificate to serve")
    parser.add_argument("--key", metavar="PEM", help="the certificate's private key")
    parser.add_argument(
        "--lease",
        type=float,
        metavar="S",
        default=DEFAULT_LEASE,
        help="how long a silent coordinator keeps what it holds (default %(default)g)",
    )
    parser.add_argument(
        "--groups",
        type=int,
        metavar="N",
        help="logical groups of workers and jobs, spread over the coordinators sharing a "
        "PostgreSQL store (default: one per live coordinator; groups once made stay)",
    )
    parser.add_argument(
        "--min-workers",
        type=int,
        metavar="N",
        help="while serving, start workers with --worker-command when fewer than N are live",
    )
    parser.add_argument(
        "--worker-command",
        metavar="CMD",
        help="shell command that starts one worker (a local process, ssh, a batch "
        "submission); it sees XWCH_COORDINATOR and XWCH_START_ID",
    )
    parser.add_argument(
        "--worker-start-interval",
        type=float,
        metavar="S",
        help="least time between two worker starts (default 5)",
    )
    parser.add_argument(
        "--alive-interval",
        type=float,
        metavar="S",
        help="seconds between a worker's Work Alive signals (default 5)",
    )
    parser.add_argument(
        "--alive-timeout",
        type=float,
        metavar="S",
        help="silence after which a worker is lost (default 3 intervals)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        metavar="N",
        help="warehouses that should hold each object (default 2, capped by how many there are)",
    )
    parser.add_argument(
        "--scan-interval",
        type=float,
        metavar="S",
        help="seconds between scanner rounds (default 10)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="S",
        help="seconds between warehouses' heartbeats (default 10)",
    )
    parser.add_argument(
        "--warehouse-timeout",
        type=float,
        metavar="S",
        help="silence after which a warehouse is taken for gone (default 60)",
    )
    parser.add_argument(
        "--scheduler",
        choices=POLICIES,
        default=POLICY_LOCALITY,
        help="scheduling policy: locality (data locality, worker speed, fair share; the "
        "default) or fifo (priority, then submission order; blind to data and speed)",
    )
    parser.add_argument(
        "--site-rate",
        type=float,
        metavar="BYTES/S",
        help="transfer rate assumed within a site until measured (default 100e6)",
    )
    parser.add_argument(
        "--wan-rate",
        type=float,
        metavar="BYTES/S",
        help="transfer rate assumed between sites until measured (default 10e6)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    sub = parser.add_subparsers(dest="command")
    token = sub.add_parser("token", help="manage credentials")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token, alone on a line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="who the token is for (default: the role)")
    create.add_argument(
        "--cert",
        metavar="PEM",
        dest="token_cert",
        help="the certificate the coordinator serves (default: --data/tls/cert.pem when the "
        "coordinator made one): the token pins it",
    )
    listing = token_sub.add_parser("list", help="the tokens in force: id, role, created, name")
    revoke = token_sub.add_parser(
        "revoke", help="revoke a token (refused everywhere within seconds)"
    )
    revoke.add_argument("which", metavar="ID|TOKEN", help="its id (see token list), or itself")
    for command in (create, listing, revoke):
        command.add_argument("--db", metavar="URL", dest="token_db")
        command.add_argument("--data", metavar="DIR", type=Path, dest="token_data")
    return parser


def _db_url(db: str | None, data: Path | None) -> str:
    if db:
        return db
    folder = data or xwch_home() / "coordinator"
    folder.mkdir(parents=True, exist_ok=True)
    return default_url(folder)


def _served_fingerprint(args: argparse.Namespace) -> str | None:
    """The fingerprint of the certificate a coordinator of this data folder serves, if any."""
    cert = args.token_cert
    if cert is None:
        made = (args.token_data or args.data or xwch_home() / "coordinator") / TLS_FOLDER
        if not (made / CERT_FILE).exists():
            return None
        cert = made / CERT_FILE
    try:
        return fingerprint_of_pem(Path(cert).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"--cert {cert}: not a PEM certificate: {e}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in (
        "alive_interval",
        "alive_timeout",
        "scan_interval",
        "heartbeat_interval",
        "warehouse_timeout",
        "lease",
        "worker_start_interval",
    ):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    for name in ("site_rate", "wan_rate"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of bytes/s")
    if args.groups is not None and not 1 <= args.groups <= MOST_GROUPS:
        parser.error(f"--groups must be between 1 and {MOST_GROUPS}")
    if args.min_workers is not None and args.min_workers < 1:
        parser.error("--min-workers must be at least 1")
    if (args.min_workers is None) != (args.worker_command is None):
        parser.error("--min-workers and --worker-command go together")
    if args.worker_command is not None and not args.worker_command.strip():
        parser.error("--worker-command must not be empty")
    if args.worker_start_interval is not None and args.min_workers is None:
        parser.error("--worker-start-interval goes with --min-workers and --worker-command")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.public_url is not None and not args.public_url.startswith(("http://", "https://")):
        parser.error(f"--public-url must start with http:// or https://, not {args.public_url!r}")
    if args.command == "token":
        url = _db_url(args.token_db or args.db, args.token_data or args.data)
        try:
            if args.token_command == "create":
                secret = create_token(url, args.role, args.name or args.role)
                pin = _served_fingerprint(args)
                print(secret if pin is None else pinned_token(secret, pin), flush=True)
            elif args.token_command == "list":
                print(token_table(url), end="", flush=True)
            else:
                revoke_token(url, args.which)
                print(f"revoked token {args.which.strip()[:12]}", file=sys.stderr)
        except ConfigurationError as e:
            print(f"xwch-coordinator: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except Exception as e:  # a wrong URL or unreachable database: say so, no traceback
            print(
                f"xwch-coordinator: cannot {args.token_command} tokens in {url}: {e}",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)
        return
    from twisted.internet import task

    from xwch.logs import start_logging

    url = _db_url(args.db, args.data)
    try:
        # Before anything else: a refused coordinator changes nothing.
        lock = hold_store(url)
    except StoreHeld as e:
        print(f"xwch-coordinator: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    start_logging(args.log_level)
    task.react(_run, [args, url, lock])


async def _run(reactor: object, args: argparse.Namespace, url: str, lock: StoreLock | None) -> None:
    from sqlalchemy.exc import DBAPIError
    from twisted.internet.defer import Deferred
    from twisted.internet.error import CannotListenError

    from xwch.coordinator.assembly import CoordinatorConfig, make_coordinator
    from xwch.startup import freeze_what_is_loaded, raise_open_file_limit, stop_once_on_signals
    from xwch.store.schema import SchemaTooNew

    try:
        tls = tls_files(
            args.tls, args.cert, args.key, (args.data or xwch_home() / "coordinator") / TLS_FOLDER
        )
    except ConfigurationError as e:
        print(f"xwch-coordinator: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    config = CoordinatorConfig(
        tls=tls,
        db_url=url,
        listen=args.listen,
        alive_interval=args.alive_interval,
        alive_timeout=args.alive_timeout,
        replicas=args.replicas,
        scan_interval=args.scan_interval,
        heartbeat_interval=args.heartbeat_interval,
        warehouse_timeout=args.warehouse_timeout,
        scheduler=args.scheduler,
        site_rate=args.site_rate,
        wan_rate=args.wan_rate,
        public_url=args.public_url.rstrip("/") if args.public_url else None,
        lease=args.lease,
        groups=args.groups,
        min_workers=args.min_workers or 0,
        worker_command=args.worker_command,
        worker_start_interval=args.worker_start_interval,
        worker_log=(args.data or xwch_home() / "coordinator") / "started-workers.log",
    )
    raise_open_file_limit()
    stop_once_on_signals(reactor)
    try:
        coordinator = await make_coordinator(config, reactor)  # type: ignore[arg-type]
    except (DBAPIError, SchemaTooNew) as e:
        # A wrong URL or password, a server down, a store of a newer XWCH: one line, no stack.
        print(
            f"xwch-coordinator: cannot open the store {_shown(url)}: {_first_line(e)}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE) from None
    coordinator.startService()
    try:
        await coordinator.web.when_listening()
    except CannotListenError as e:
        # Stopped before saying so: its store's threads would keep the process alive.
        await coordinator.stopService()
        print(f"xwch-coordinator: cannot listen on {args.listen}: {e.socketError}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    freeze_what_is_loaded()
    if lock is not None:
        lock.tell(coordinator.url())
    print(f"xwch-coordinator listening on {coordinator.url()}", flush=True)
    done: Deferred[None] = Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", lambda: coordinator.stopService())  # type: ignore[attr-defined]
    await done  # runs until SIGINT/SIGTERM stop the reactor


def _shown(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def _first_line(error: Exception) -> str:
    cause = getattr(error, "orig", None) or error
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


if __name__ == "__main__":
    main()
