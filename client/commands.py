"""What each ``xwch-client`` command does, given its parsed arguments.

A command writes its answer on standard output and everything else (progress, hints) on
standard error, and returns its exit status; errors are raised as domain exceptions and turned
into statuses by ``__main__``, the one place that knows docs/cli.md's table of exit statuses.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

from twisted.internet.interfaces import IReactorTime

from xwch.config import resolve_endpoint
from xwch.dag import Job, load_job_file
from xwch.errors import ConfigurationError
from xwch.http import JsonApi, PooledHttpClient
from xwch.protocol.client import AttemptLog, JobSummary
from xwch.protocol.states import TaskStatus
from xwch.protocol.wire import API_PREFIX, JOB_DONE
from xwch.signing import (
    PRIVATE_KEY_FILE,
    create_private_key,
    format_public_key,
    load_key,
    load_key_if_any,
)
from xwch.tls import https_policy

from .browser import open_in_browser
from .clock import now
from .coordinator import CoordinatorClient
from .follow import JobFollower
from .follow_logs import LogFollower
from .network_text import network_text
from .results import default_results_dir, download_results
from .submit import submit
from .tables import coordinators_table, jobs_table, status_text, tasks_table, workers_table
from .transfers import Transfers
from .workers_note import WorkersWatch

PROGRAM = "xwch-client"
# The state of a worker the coordinator stopped hearing from (xwch/coordinator/workers.py).
WORKER_LOST = "lost"
# Failed tasks named after a failed job; more would bury the hint under the list.
FAILED_SHOWN = 5


@dataclass
class Context:
    """What a command works with; the tests give fakes for any of it."""

    reactor: IReactorTime
    http: Any  # a treq HTTPClient, or treq.testing.StubTreq
    stdout: TextIO
    stderr: TextIO
    environ: Mapping[str, str] | None = None
    transfers: Transfers | None = None
    load_job: Callable[[Path], Job] = load_job_file
    isatty: bool | None = None  # None: ask standard error
    tz: tzinfo | None = None  # None: the machine's local time
    cwd: Path | None = None  # None: the process's working directory
    # Opens a URL in a browser; False when there is none (see browser.py).
    open_url: Callable[[str], bool] = open_in_browser
    coordinator_url: str | None = field(default=None, init=False)

    def client(self, args: argparse.Namespace) -> CoordinatorClient:
        """The coordinator named by the flags, the environment or client.toml."""
        endpoint = resolve_endpoint(
            getattr(args, "coordinator", None),
            getattr(args, "token", None),
            files=("client.toml",),
            environ=self.environ,
            token_file=getattr(args, "token_file", None),
        )
        self.coordinator_url = endpoint.url
        if endpoint.pin is not None and isinstance(self.http, PooledHttpClient):
            # The token pins the platform's certificate: every https:// link must show it.
            self.http.use_https_policy(
                https_policy(endpoint.pin, lambda why: self.note(f"{PROGRAM}: {why}"))
            )
        return CoordinatorClient(JsonApi(self.http, endpoint.url, endpoint.token, self.reactor))

    def home(self) -> Path:
        """``$XWCH_HOME`` of this command's environment (default ``~/.xwch``)."""
        env = os.environ if self.environ is None else self.environ
        return Path(env.get("XWCH_HOME") or Path.home() / ".xwch")

    def out(self, text: str) -> None:
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        """A line for the user, on standard error: never mixed with the command's answer."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def out_json(self, doc: object) -> None:
        self.out(json.dumps(doc, indent=2))

    def now(self) -> float:
        return now(self.reactor)


Command = Callable[[Context, argparse.Namespace], Awaitable[int]]


async def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    # The file is checked before anything else, even before finding the coordinator:
    # an invalid file sends nothing (docs/job-file.md).
    job = ctx.load_job(Path(args.file))
    api = ctx.client(args)
    key = load_key_if_any(ctx.home())
    if key is not None:
        ctx.note(f"signing the job's programs with {format_public_key(key.public_key())}")
    job_id = await submit(
        api, ctx.http, job, ctx.reactor, ctx.note, ctx.transfers, site=args.site, signing_key=key
    )
    # Alone on the first line, at once: scripts read it while --wait goes on.
    ctx.out(job_id)
    if not args.wait:
        return 0
    status = await _ended(ctx, api, await _follow(ctx, api, job_id))
    # Also after a failure: the results that exist help to see what went wrong.
    directory = Path(args.output) if args.output else default_results_dir(job.name, ctx.cwd)
    downloaded = await download_results(
        api, ctx.http, job_id, directory, ctx.reactor, ctx.note, ctx.transfers
    )
    ctx.out(downloaded.summary())
    return status


async def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)
    final = await _follow(ctx, api, args.job)
    return await _ended(ctx, api, final, as_json=args.json)


async def _follow(ctx: Context, api: CoordinatorClient, job_id: str) -> JobSummary:
    watch = WorkersWatch(ctx.reactor, api.workers)
    return await JobFollower(api, ctx.reactor, ctx.stderr, ctx.isatty, workers=watch).follow(job_id)


async def _ended(
    ctx: Context, api: CoordinatorClient, job: JobSummary, as_json: bool = False
) -> int:
    """Tell how the job ended (its summary, with ``as_json``); 0 if it is done, 1 if it
    failed or was cancelled."""
    if as_json:
        ctx.out_json(job.to_json())
    else:
        ctx.out(f"job {job.id} {job.state}: {job.count('done')}/{job.total} tasks done")
    if job.state == JOB_DONE:
        return 0
    if job.message:
        ctx.note(job.message)
    failed = [t.id for t in await api.tasks(job.id) if t.state == TaskStatus.FAILED]
    if failed:
        shown = ", ".join(failed[:FAILED_SHOWN])
        more = f" and {len(failed) - FAILED_SHOWN} more" if len(failed) > FAILED_SHOWN else ""
        ctx.note(f"failed tasks: {shown}{more}")
        ctx.note(f"see why with: {PROGRAM} logs {job.id} {failed[0]}")
    return 1


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)
    job = await api.job(args.job)
    if args.json:
        ctx.out_json(job.to_json())
        return 0
    # A running job stuck because no worker computes says why (the workers' own reasons).
    note = None if job.has_ended else await WorkersWatch(ctx.reactor, api.workers).update()
    ctx.out(status_text(job, ctx.now(), ctx.tz, workers=note))
    return 0


async def cmd_tasks(ctx: Context, args: argparse.Namespace) -> int:
    tasks = await ctx.client(args).tasks(args.job)
    if args.state is not None:
        tasks = [t for t in tasks if t.state in args.states]
    if args.json:
        ctx.out_json({"tasks": [t.to_json() for t in tasks]})
    else:
        ctx.out(tasks_table(tasks, ctx.now(), ctx.tz))
    return 0


async def cmd_workers(ctx: Context, args: argparse.Namespace) -> int:
    workers = await ctx.client(args).workers()
    if not args.all:
        # Every worker that ever stopped stays in the store as lost: shown, they would bury
        # the live ones (and a worker started again under its name appears once per start).
        shown = [w for w in workers if w.state != WORKER_LOST]
        hidden = len(workers) - len(shown)
        workers = shown
        if hidden:
            ctx.note(f"{hidden} lost worker(s) not shown; --all shows them")
    if args.json:
        ctx.out_json({"workers": [w.to_json() for w in workers]})
    else:
        ctx.out(workers_table(workers, ctx.now()))
    return 0


async def cmd_coordinators(ctx: Context, args: argparse.Namespace) -> int:
    members = await ctx.client(args).coordinators()
    if args.json:
        ctx.out_json({"coordinators": [m.to_json() for m in members]})
    else:
        ctx.out(coordinators_table(members, ctx.now()))
    return 0


async def cmd_results(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)
    job = await api.job(args.job)
    if not job.has_ended:
        # Its results are not all there yet: say so, rather than "no results" and success.
        ctx.note(
            f"job {job.id} is still {job.state} ({job.count('done')}/{job.total} tasks done): "
            f"its results can be downloaded once it has ended; follow it with "
            f"`xwch-client wait {job.id}`"
        )
        return 1
    directory = Path(args.output) if args.output else default_results_dir(job.name, ctx.cwd)
    downloaded = await download_results(
        api, ctx.http, args.job, directory, ctx.reactor, ctx.note, ctx.transfers
    )
    ctx.out(downloaded.summary())
    return 0


def format_logs(log: AttemptLog) -> str:
    """An attempt's outcome, then its standard output and error under ``tail``-like headers."""
    head = f"task {log.task}, attempt {log.attempt}"
    if log.worker:
        head += f" on {log.worker}"
    head += f": {log.state}"
    if log.exit_code is not None:
        head += f", exit code {log.exit_code}"
    lines = [head]
    if log.error:
        lines.append(f"error: {log.error}")
    for name, text in (("stdout", log.stdout), ("stderr", log.stderr)):
        lines.append(f"==> {name} <==")
        if text:
            lines.append(text[:-1] if text.endswith("\n") else text)
        else:
            lines.append("(empty)")
    return "\n".join(lines) + "\n"


async def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)

    def show(log: AttemptLog) -> None:
        if not args.json:
            ctx.out(format_logs(log))
        elif args.follow:
            ctx.out(json.dumps(log.to_json()))  # JSON Lines: one attempt a line, as it ends
        else:
            ctx.out_json(log.to_json())

    if not args.follow:
        show(await api.logs(args.job, args.task, args.attempt))
        return 0
    follower = LogFollower(api, ctx.reactor, show, ctx.note)
    state = await follower.follow(args.job, args.task, args.attempt)
    ctx.note(f"task {args.task} {state}")
    return 0 if state == TaskStatus.DONE else 1


async def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    job = await ctx.client(args).cancel(args.job)
    if args.json:
        ctx.out_json(job.to_json())
    else:
        ctx.out(f"job {job.id} {job.state}: {job.count('done')}/{job.total} tasks done")
    return 0


async def cmd_retry(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)
    job = await api.retry(args.job)
    left = job.total - job.count(TaskStatus.DONE)
    if args.wait:
        # With --json, the one document printed is the job's summary once it has ended.
        if not args.json:
            ctx.out(
                f"job {job.id} {job.state}: {left} task(s) to run again, {job.count('done')} kept"
            )
        return await _ended(ctx, api, await _follow(ctx, api, job.id), as_json=args.json)
    if args.json:
        ctx.out_json(job.to_json())
    else:
        ctx.out(f"job {job.id} {job.state}: {left} task(s) to run again, {job.count('done')} kept")
    return 0


async def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    jobs = await ctx.client(args).jobs()
    if args.json:
        ctx.out_json({"jobs": [j.to_json() for j in jobs]})
    else:
        ctx.out(jobs_table(jobs, ctx.now(), ctx.tz))
    return 0


async def cmd_network(ctx: Context, args: argparse.Namespace) -> int:
    status = await ctx.client(args).api.get(f"{API_PREFIX}/status")
    if args.json:
        ctx.out_json(status.get("communication") if isinstance(status, dict) else status)
    else:
        ctx.out(network_text(status, ctx.now()))
    return 0


async def cmd_dashboard(ctx: Context, args: argparse.Namespace) -> int:
    api = ctx.client(args)
    login = await api.dashboard_login()
    url = api.url.rstrip("/") + login.path
    # Alone on a line: scripts and tests read it.
    ctx.out(url)
    minutes = login.expires_in / 60
    if not args.no_open and ctx.open_url(url):
        ctx.note("opened in your browser")
    else:
        ctx.note(f"open it in a browser within {minutes:g} minutes; it works once")
    return 0


async def cmd_keys(ctx: Context, args: argparse.Namespace) -> int:
    home = ctx.home()
    if args.action == "create":
        public = create_private_key(home)
        ctx.note(f"private key written to {home / PRIVATE_KEY_FILE} (readable by you only)")
    else:
        if load_key_if_any(home) is None:
            raise ConfigurationError(
                f"no signing key in {home}: make one with `{PROGRAM} keys create`"
            )
        public = load_key(home).public_key()
    # Alone on a line: the volunteers' workers take it with --trust.
    ctx.out(format_public_key(public))
    return 0


COMMANDS: dict[str, Command] = {
    "submit": cmd_submit,
    "wait": cmd_wait,
    "status": cmd_status,
    "tasks": cmd_tasks,
    "workers": cmd_workers,
    "coordinators": cmd_coordinators,
    "results": cmd_results,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "list": cmd_list,
    "network": cmd_network,
    "dashboard": cmd_dashboard,
    "keys": cmd_keys,
}
