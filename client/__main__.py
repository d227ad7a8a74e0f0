"""``xwch-client``: the command line of docs/cli.md.

:func:`run` parses the arguments, runs one command and maps every expected error to the exit
status docs/cli.md promises; :func:`main` runs it under ``task.react`` with the real reactor, HTTP
client and standard streams. Tests call :func:`run` in-process with fakes.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from xwch import add_version_flag
from xwch.dag import Job, load_job_file
from xwch.errors import (
    ApiError,
    BundleError,
    ConfigurationError,
    JobFileError,
    Unreachable,
    XwchError,
)
from xwch.http import make_http_client
from xwch.protocol.states import TaskStatus
from xwch.startup import freeze_what_is_loaded

from .commands import COMMANDS, PROGRAM, Context
from .follow_logs import UnknownTask
from .transfers import Transfers

# Exit statuses, docs/cli.md: "for every command".
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job failed or was cancelled (submit --wait, wait)
EXIT_USAGE = 2  # invalid input or usage, with the reason on standard error
EXIT_COORDINATOR = 3  # the coordinator could not be reached or refused the credentials
# Outside the table of docs/cli.md: stopped by a signal before the command finished (128 + SIGINT).
EXIT_INTERRUPTED = 130

EPILOG = """\
The coordinator and the token come from --coordinator/--token, else the variables
XWCH_COORDINATOR/XWCH_TOKEN, else $XWCH_HOME/client.toml (XWCH_HOME defaults to ~/.xwch).

exit status: 0 success; 1 the job failed or was cancelled (submit --wait, wait, retry --wait);
2 invalid input or usage; 3 the coordinator could not be reached or refused the credentials.
"""


def _connection_options() -> argparse.ArgumentParser:
    # SUPPRESS as default: given after the subcommand, a flag is set by the subparser; not
    # given there, the subparser leaves alone the value given before the subcommand.
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--coordinator",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the coordinator's URL (else XWCH_COORDINATOR, else client.toml)",
    )
    options.add_argument(
        "--token",
        metavar="T",
        default=argparse.SUPPRESS,
        help="a client token (else XWCH_TOKEN, else client.toml); visible in process "
        "listings: prefer --token-file",
    )
    options.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="a file holding the client token alone on a line (else XWCH_TOKEN_FILE)",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    connection = _connection_options()
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Submit jobs to an XWCH coordinator and follow them.",
        epilog=EPILOG,
        parents=[connection],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=EPILOG,
            parents=[connection],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Checks made after parsing report through the subcommand's own usage line.
        sub.set_defaults(parser=sub)
        return sub

    submit = command(
        "submit",
        "validate a job file, upload what it needs and create the job",
        "Validate DAG.json (nothing is sent if it is invalid), upload its binaries and files, "
        "create the job and print its id alone on the first line of standard output.",
    )
    submit.add_argument("file", metavar="DAG.json", help="the job file")
    submit.add_argument(
        "--site",
        metavar="NAME",
        help="upload to a warehouse of this site (default: the one with the most free space)",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job (progress on standard error) and download its results at the end",
    )
    submit.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="with --wait: where the results go (default ./<job name>-results/)",
    )

    wait = command("wait", "follow a job until it ends", "Follow a job until it ends.")
    wait.add_argument("job", metavar="JOB", help="the job's id")
    wait.add_argument("--json", action="store_true", help="print the ended job's summary as JSON")

    status = command(
        "status", "a job's state and its tasks by state", "A job's state and its tasks by state."
    )
    status.add_argument("job", metavar="JOB", help="the job's id")
    status.add_argument("--json", action="store_true", help="print JSON")

    tasks = command(
        "tasks",
        "a job's tasks, one a row",
        "One row a task: id, state, cost, worker, attempts, start and end time.",
    )
    tasks.add_argument("job", metavar="JOB", help="the job's id")
    tasks.add_argument(
        "--state",
        metavar="STATE",
        help="only tasks in this state, or in any of several separated by commas "
        f"({', '.join(TaskStatus)})",
    )
    tasks.add_argument("--json", action="store_true", help="print JSON")

    workers = command(
        "workers",
        "the workers, one a row",
        "One row a worker: id, name, site, state (alive, suspended, quarantined, distrusted or lost), "
        "slots busy and in all, address, platform, cores, memory (GiB), tasks done, last "
        "heard, and why a suspended worker computes nothing. Lost workers are left out "
        "unless --all.",
    )
    workers.add_argument(
        "--all", action="store_true", help="also the lost workers, the most recently heard first"
    )
    workers.add_argument("--json", action="store_true", help="print JSON")

    coordinators = command(
        "coordinators",
        "the coordinators sharing the store, one a row",
        "One row a coordinator: id, URL, state (live or lost), groups held, workers, "
        "attempts running, last heard.",
    )
    coordinators.add_argument("--json", action="store_true", help="print JSON")

    results = command(
        "results",
        "download a job's results",
        "Download the results of a job (see `results` in the job file) into "
        "DIR/<task id>/<output>.",
    )
    results.add_argument("job", metavar="JOB", help="the job's id")
    results.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="where the results go (default ./<job name>-results/)",
    )

    logs = command(
        "logs",
        "standard output and error of a task's attempt",
        "Standard output and error of a task's attempt (default: the last one). A worker "
        "sends an attempt's output when the attempt ends: --follow waits for each.",
    )
    logs.add_argument("job", metavar="JOB", help="the job's id")
    logs.add_argument("task", metavar="TASK", help="the task's id")
    logs.add_argument("--attempt", metavar="N", type=int, help="the attempt's number")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print each attempt's output as it ends (from --attempt N, else the last) until "
        "the task has ended; exit 1 if it failed or was cancelled",
    )
    logs.add_argument(
        "--json", action="store_true", help="print JSON (with --follow: one line an attempt)"
    )

    cancel = command(
        "cancel",
        "stop a job",
        "Stop a job: no new attempts start, running ones are killed.",
    )
    cancel.add_argument("job", metavar="JOB", help="the job's id")
    cancel.add_argument("--json", action="store_true", help="print the job's summary as JSON")

    retry = command(
        "retry",
        "run again what failed in an ended job",
        "Run again the failed and cancelled tasks of a failed or cancelled job, keeping the "
        "tasks that are done (a rescue, like DAGMan's rescue DAG).",
    )
    retry.add_argument("job", metavar="JOB", help="the job's id")
    retry.add_argument("--wait", action="store_true", help="follow the job until it ends")
    retry.add_argument(
        "--json",
        action="store_true",
        help="print the job's summary as JSON (with --wait: once it has ended)",
    )

    dashboard = command(
        "dashboard",
        "a one-time link to the coordinator's web dashboard",
        "Print, alone on a line, a link to the coordinator's dashboard with a login code that "
        "works once, within five minutes, and open it in a browser where there is one. The "
        "token stays here: the browser gets a session cookie of its own.",
    )
    dashboard.add_argument(
        "--no-open", action="store_true", help="only print the link, open no browser"
    )

    keys = command(
        "keys",
        "make or show this client's signing key",
        "create: make an Ed25519 key pair in $XWCH_HOME (the private key readable by you "
        "only) and print the public key alone on a line, as ed25519:BASE64; show: print it "
        "again. With a key, submit signs each program of the job, and workers started with "
        "--trust KEY run only programs signed by KEY.",
    )
    keys.add_argument("action", choices=("create", "show"), help="what to do")

    listing = command("list", "the jobs, newest first", "The jobs, newest first.")
    listing.add_argument("--json", action="store_true", help="print JSON")

    network = command(
        "network",
        "the transfer policy, limits and link estimates",
        "The communication manager's view: the transfer policy in force, how many Work "
        "Requests and transfer sessions are served at once and how many wait, and each link's "
        "estimated capacity, traffic (XWCH's and others'), delay and load.",
    )
    network.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _parse(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when argparse is done (help, usage error)."""
    parser = build_parser()
    # argparse prints help and errors on sys.stdout/sys.stderr; point them at our streams.
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            args = parser.parse_args(list(argv))
            if args.command == "submit" and args.output and not args.wait:
                args.parser.error("-o/--output goes with --wait (or use: results JOB -o DIR)")
            if args.command == "tasks" and args.state is not None:
                args.states = _task_states(args.state, args.parser)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return args


def _task_states(flag: str, parser: argparse.ArgumentParser) -> frozenset[str]:
    """The states of ``tasks --state``, checked against the states tasks have."""
    states = frozenset(s.strip() for s in flag.split(",") if s.strip())
    unknown = sorted(states - set(TaskStatus))
    if unknown or not states:
        parser.error(
            f"--state {flag!r}: {', '.join(unknown) or 'no state'} is not a task state "
            f"(one of {', '.join(TaskStatus)})"
        )
    return states


def exit_status(error: XwchError, coordinator: str | None) -> tuple[int, str]:
    """The exit status for an expected error, and the line that tells the user why."""
    where = coordinator or "the coordinator"
    if isinstance(error, (JobFileError, ConfigurationError, BundleError, UnknownTask)):
        return EXIT_USAGE, str(error)
    if isinstance(error, Unreachable):
        return EXIT_COORDINATOR, str(error)
    if isinstance(error, ApiError):
        if error.status in (401, 403):
            return EXIT_COORDINATOR, f"{where} refused the credentials: {error.message}"
        if 400 <= error.status < 500:
            # Unknown job or task (404), a request the coordinator found invalid (400, 409).
            return EXIT_USAGE, error.message
        # 5xx: the coordinator is there but cannot serve us; like unreachable, try later.
        return EXIT_COORDINATOR, f"{where} failed: {error}"
    # A malformed answer, a corrupt or refused transfer: the other side failed us.
    return EXIT_COORDINATOR, str(error)


async def run(
    argv: Sequence[str],
    reactor: IReactorTime,
    http: Any,
    stdout: TextIO,
    stderr: TextIO,
    *,
    environ: Mapping[str, str] | None = None,
    transfers: Transfers | None = None,
    load_job: Callable[[Path], Job] = load_job_file,
    isatty: bool | None = None,
    tz: tzinfo | None = None,
    cwd: Path | None = None,
    open_url: Callable[[str], bool] | None = None,
) -> int:
    """Run one ``xwch-client`` command line; its exit status. Never raises for expected errors.

    ``http`` is a treq ``HTTPClient`` (or ``treq.testing.StubTreq``); ``environ`` replaces
    ``os.environ`` for finding the coordinator; ``isatty`` forces the progress display style;
    ``open_url`` replaces opening a link in the browser.
    """
    parsed = _parse(argv, stdout, stderr)
    if isinstance(parsed, int):
        return parsed
    ctx = Context(
        reactor=reactor,
        http=http,
        stdout=stdout,
        stderr=stderr,
        environ=environ,
        transfers=transfers,
        load_job=load_job,
        isatty=isatty,
        tz=tz,
        cwd=cwd,
    )
    if open_url is not None:
        ctx.open_url = open_url
    try:
        return await COMMANDS[parsed.command](ctx, parsed)
    except XwchError as e:
        status, message = exit_status(e, ctx.coordinator_url)
    except OSError as e:
        # A local file: unreadable input, a results folder we cannot write.
        where = f"{e.filename}: " if e.filename else ""
        status, message = EXIT_USAGE, f"{where}{e.strerror or e}"
    stderr.write(f"{PROGRAM}: {message}\n")
    stderr.flush()
    return status


def main(argv: Sequence[str] | None = None) -> None:
    """The ``xwch-client`` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    finished: list[int] = []
    freeze_what_is_loaded()

    async def react_main(reactor: Any) -> None:
        try:
            status = await run(
                arguments, reactor, make_http_client(reactor), sys.stdout, sys.stderr
            )
        except Exception:
            # A bug, not an expected error: show the traceback, as Python would.
            traceback.print_exc()
            status = 1
        finished.append(status)
        # What the command made is not worth a last collection on the way out either.
        freeze_what_is_loaded()
        if status != EXIT_OK:
            raise SystemExit(status)

    try:
        task.react(react_main)
    except SystemExit:
        if not finished:
            # The reactor stopped (Ctrl-C, SIGTERM) before the command ended: react would
            # exit 0 as if all went well.
            # On a terminal the progress line may be half drawn: start a fresh one.
            fresh = "\n" if sys.stderr.isatty() else ""
            sys.stderr.write(f"{fresh}{PROGRAM}: interrupted\n")
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise


if __name__ == "__main__":
    main()
