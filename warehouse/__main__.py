"""``xwch-warehouse``: run a warehouse node.

xwch-warehouse --coordinator URL --token T [--data DIR] [--listen ENDPOINT]
               [--site NAME] [--public-url URL] [--upload-cap RATE] [--download-cap RATE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.logger import Logger

from xwch import add_version_flag
from xwch.config import resolve_endpoint, xwch_home
from xwch.errors import ConfigurationError
from xwch.http import JsonApi, make_http_client
from xwch.logs import start_logging
from xwch.member_list import keep_learning
from xwch.startup import freeze_what_is_loaded, raise_open_file_limit, stop_once_on_signals
from xwch.tls import CERT_FILE, TLS_FOLDER, StopOnMismatch, fingerprint, https_policy, tls_files
from xwch.transfer.rates import parse_rate

from .metrics import ACCESS_PATH, MetricsAccess, coordinator_check
from .node import WarehouseService
from .objects import ObjectStore

PROGRAM = "xwch-warehouse"
DEFAULT_LISTEN = "tcp:8751"
DEFAULT_SITE = "default"

log = Logger()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Run an XWCH warehouse node: object storage near the workers."
    )
    add_version_flag(parser)
    parser.add_argument(
        "--coordinator", metavar="URL", help="the coordinator (or XWCH_COORDINATOR)"
    )
    parser.add_argument("--token", metavar="T", help="a token of role warehouse (or XWCH_TOKEN)")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with the platform's certificate (--cert/--key, default the one a "
        "coordinator of this XWCH_HOME made)",
    )
    parser.add_argument("--cert", metavar="PEM", help="the certificate to serve (with --key)")
    parser.add_argument("--key", metavar="PEM", help="its private key")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the token alone on a line, kept out of process listings "
        "(or XWCH_TOKEN_FILE)",
    )
    parser.add_argument(
        "--data", metavar="DIR", type=Path, help="where objects are kept ($XWCH_HOME/warehouse)"
    )
    parser.add_argument(
        "--listen",
        metavar="ENDPOINT",
        default=DEFAULT_LISTEN,
        help=f"a Twisted server endpoint (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--site", metavar="NAME", default=DEFAULT_SITE, help="the site workers near it name"
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL workers and clients reach it at (default: http://INTERFACE:PORT)",
    )
    parser.add_argument(
        "--upload-cap",
        metavar="RATE",
        type=_rate,
        help="most bytes per second it sends, e.g. 2M or 40mbit (default: no cap)",
    )
    parser.add_argument(
        "--download-cap",
        metavar="RATE",
        type=_rate,
        help="most bytes per second it receives, e.g. 2M or 40mbit (default: no cap)",
    )
    return parser


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _usage_error(message: str) -> NoReturn:
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


async def _run(reactor: Any, service: WarehouseService, coordinator: JsonApi) -> None:
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    raise_open_file_limit()
    stop_once_on_signals(reactor)
    service.startService()
    try:
        url = await service.when_listening()
        # Said once it can serve (registered, inventory reported): supervisors start what
        # depends on it when they read this line.
        await service.when_registered()
        freeze_what_is_loaded()
        print(f"{PROGRAM} listening on {url}", flush=True)
        # The other coordinators of the platform, to go to when this one dies.
        learning = keep_learning(reactor, coordinator)
        reactor.addSystemEventTrigger("before", "shutdown", learning.stop)
        await service.when_failed()
    except Exception:
        # The service has logged why; the exit status says it failed.
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        endpoint = resolve_endpoint(
            args.coordinator, args.token, files=("warehouse.toml",), token_file=args.token_file
        )
    except ConfigurationError as e:
        _usage_error(str(e))
    if args.public_url is not None and not args.public_url.startswith(("http://", "https://")):
        _usage_error(f"--public-url must start with http:// or https://: {args.public_url}")
    data: Path = args.data if args.data is not None else xwch_home() / "warehouse"
    try:
        store = ObjectStore(data)
    except OSError as e:
        _usage_error(f"--data {data}: {e}")

    # Only here, the one place allowed to, do we take the global reactor.
    from twisted.internet import reactor

    try:
        serverFromString(reactor, args.listen)
    except ValueError as e:
        _usage_error(f"--listen {args.listen}: {e}")

    try:
        tls = tls_files(args.tls, args.cert, args.key, _coordinator_tls_folder())
    except ConfigurationError as e:
        _usage_error(str(e))
    if tls is not None and endpoint.pin is not None and fingerprint(tls) != endpoint.pin:
        _usage_error(
            "--cert is not the certificate the token pins: a warehouse serves the platform's "
            "certificate (the coordinator's --cert/--key)"
        )
    start_logging()
    # A token pinning the platform's certificate: every https:// link must show it.
    mismatch = StopOnMismatch(PROGRAM, reactor.stop)
    http = make_http_client(reactor, tls=https_policy(endpoint.pin, mismatch))
    coordinator = JsonApi(http, endpoint.url, endpoint.token, reactor)
    # A scraper's token is checked by asking the coordinator with that token.
    access = MetricsAccess(
        reactor,
        coordinator_check(
            lambda token: JsonApi(coordinator.http, endpoint.url, token, reactor).get(ACCESS_PATH)
        ),
    )
    service = WarehouseService(
        reactor,
        store,
        coordinator,
        args.public_url,
        args.site,
        args.listen,
        http=coordinator.http,
        metrics_access=access,
        tls=tls,
    )
    service.resource.network.upload.set_rate(args.upload_cap)
    service.resource.network.download.set_rate(args.download_cap)
    # The warehouse's own transfers (copies from other warehouses) make way for other programs'
    # traffic on its host, as a worker's do; what it serves is paced by whoever asks for it.
    service.resource.network.pacer.watch_host()

    def run(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(_run(reactor, service, coordinator))

    try:
        react(run)
    except SystemExit:
        if mismatch.message is not None:
            raise SystemExit(3) from None
        raise


def _coordinator_tls_folder() -> Path | None:
    """Where a coordinator of this XWCH_HOME made its certificate (xwch-local's warehouses
    serve it); None when there is none."""
    folder = xwch_home() / "coordinator" / TLS_FOLDER
    return folder if (folder / CERT_FILE).exists() else None


if __name__ == "__main__":
    main()
