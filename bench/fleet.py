"""Fleet: how many simulated workers the coordinators sustain with Work Requests answered fast.

    .venv/bin/python bench/fleet.py [--steps 250,500,1000,2000] [--step-seconds 30]
                                    [--task-seconds 3] [--task-jitter 0.2]
                                    [--members 1|2] [--jobs N] [--db sqlite|postgresql]

Starts xwch-local with no worker and one warehouse, its coordinators told to expect Work Alive
every 10 s and to scan every 10 s (a coordinator's defaults, not xwch-local's quicker ones),
submits --jobs jobs of many trivial tasks, then runs simulated workers in this process: each
registers, keeps its own keep-alive connection, long-polls Work Requests for one slot, "runs"
each task it gets for --task-seconds without running anything (each task's length drawn within
+-20%, --task-jitter: tasks all of one length would keep the workers in step, all asking at the
same instant, as no real fleet does), reports the result with its next Work Request in one call
(as real workers do), and sends Work Alive every 10 s. Workers are added step by step; at each
step, over --step-seconds, it prints the latency of the calls that handed out work (p50, p99;
from the first try, answers "busy, retry after S" and their waits included, as a real worker
lives them), the tasks finished per second, the busy answers, the redirects followed, errors,
and the coordinators' memory (their RSS summed). It stops after the first step whose p99
exceeds 1 s. Memory per worker is the growth of the coordinators' summed RSS between steps,
divided by the workers added.

With --members 2 (and --db postgresql, a fresh database made and dropped), the platform has two
coordinators on one store sharing the work: each holds logical groups and serves their jobs and
workers. The simulated workers are given both URLs and follow the 307 redirects the members
answer (a Register Request placed in a group held by the other member, ``?group=`` kept; a
worker's calls sent to the holder of its group, after it was lent to another group). A job
lives in one group: use ``--jobs 2`` so that each member runs a job of its own (jobs are placed
in the group running the fewest). Each step then also prints, per member, its RSS, the groups
it holds, the workers and running attempts it last told the store (``GET /coordinators``), and
how many simulated workers talk to it now. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from bench.store_backends import ADMIN, fresh_postgres
from xwch.http import agent_exchange
from xwch.localprocess import LocalPlatformProcess
from xwch.protocol.codec import decode, encode
from xwch.protocol.wire import API_PREFIX, PROTOCOL_VERSION
from xwch.protocol.worker import (
    AttemptResult,
    HostFacts,
    Registered,
    ResultsAnswer,
    ResultsReport,
    RunningAttempt,
    WorkAlive,
    WorkAnswer,
    WorkRequest,
)
from xwch.store import placement

ROOT = Path(__file__).resolve().parent.parent
NOOP = ROOT / "native/build/noop"
ALIVE_INTERVAL = 10.0
SCAN_INTERVAL = 10.0
LONG_POLL = 20.0
# As xwch.http's: a call redirected more often than this is in a loop.
MAX_REDIRECTS = 3


@dataclass
class Figures:
    """What the simulated workers saw since the last step began."""

    # How much a task's length varies: +-this fraction of --task-seconds.
    jitter: float = 0.0
    latencies: list[float] = field(default_factory=list)
    finished: int = 0
    errors: int = 0
    # Answers "busy, retry after S" (admission control): waited out as real workers do.
    busy: int = 0
    # 307/308 answers followed (a worker sent to its group's holder, a Register Request placed).
    redirects: int = 0
    last_error: str = ""

    def reset(self) -> None:
        self.latencies.clear()
        self.finished = 0
        self.errors = 0
        self.busy = 0
        self.redirects = 0


class Busy(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy, retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class SimulatedWorker:
    def __init__(
        self,
        reactor: Any,
        agent: Agent,
        urls: Sequence[str],
        token: str,
        number: int,
        task_seconds: float,
        figures: Figures,
    ) -> None:
        self._reactor = reactor
        self._agent = agent
        self._urls = list(urls)
        self._url = self._urls[0]
        self._headers = Headers(
            {
                b"authorization": [b"Bearer " + token.encode()],
                b"content-type": [b"application/json"],
                b"accept": [b"application/json"],
            }
        )
        self._number = number
        self._task_seconds = task_seconds
        self._chance = random.Random(number)
        self._figures = figures
        self._running: set[str] = set()
        self.stopped = False

    @property
    def url(self) -> str:
        """The member this worker talks to now."""
        return self._url.rstrip("/")

    async def _post(self, path: str, body: object) -> bytes:
        """POST, following a redirect to the member holding the worker's group (or to the one a
        Register Request was placed at, ``?group=`` kept) and leaving a member that does not
        answer."""
        target = self._url + path
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = await agent_exchange(
                    self._agent, b"POST", target.encode(), self._headers, encode(body)
                )
            except Exception:
                self._url = self._urls[(self._urls.index(self._url) + 1) % len(self._urls)]
                raise
            if answer.code in (307, 308):
                self._figures.redirects += 1
                # The location as given (with its query: a placed Register Request's group),
                # and its member's base URL for the calls after this one.
                target = answer.headers.getRawHeaders(b"location")[0].decode()
                parts = urlsplit(target)
                self._url = f"{parts.scheme}://{parts.netloc}"
                if self._url not in self._urls:
                    self._urls.append(self._url)
                continue
            if answer.code == 503:
                raise Busy(float(json.loads(answer.body).get("retry_after", 1.0)))
            if answer.code >= 400:
                raise RuntimeError(f"HTTP {answer.code}: {answer.body[:200]!r}")
            return answer.body
        raise RuntimeError(f"POST {path}: too many redirects (last to {target})")

    async def run(self) -> None:
        facts = HostFacts(
            name=f"sim-{self._number}",
            address="127.0.0.1",
            platform="linux-x86_64",
            cores=1,
            memory=2**30,
            slots=1,
            performance=1.0,
            protocol=PROTOCOL_VERSION,
        )
        registered = decode(await self._post(f"{API_PREFIX}/workers", facts), Registered, "rr")
        worker = registered.worker_id
        alive = task.LoopingCall(lambda: ensureDeferred(self._alive(worker)))
        alive.clock = self._reactor
        alive.start(registered.alive_interval, now=False)
        results: list[AttemptResult] = []
        work = WorkRequest(performance=1.0, free_slots=1, wait=LONG_POLL)
        # When the Work Request now being answered was first sent: answers "busy" and their
        # waits count in its latency, as a real worker would live them.
        asked: float | None = None
        try:
            while not self.stopped:
                if asked is None:
                    asked = self._reactor.seconds()
                try:
                    if results:
                        raw = await self._post(
                            f"{API_PREFIX}/workers/{worker}/results",
                            ResultsReport(results=tuple(results), work=work),
                        )
                        self._figures.finished += len(results)
                        results = []
                        tasks = decode(raw, ResultsAnswer, "wrs").tasks or ()
                    else:
                        raw = await self._post(f"{API_PREFIX}/workers/{worker}/work", work)
                        tasks = decode(raw, WorkAnswer, "wr").tasks
                except Busy as e:
                    self._figures.busy += 1
                    await task.deferLater(self._reactor, e.retry_after, lambda: None)
                    continue
                except Exception as e:
                    self._figures.errors += 1
                    self._figures.last_error = str(e)[:200]
                    await task.deferLater(self._reactor, 1.0, lambda: None)
                    continue
                if not tasks:
                    asked = None  # a long poll that ended empty: the next one starts afresh
                    continue
                self._figures.latencies.append(self._reactor.seconds() - asked)
                asked = None
                for assignment in tasks:
                    self._running.add(assignment.attempt)
                seconds = self._task_seconds * (
                    1 + self._figures.jitter * (2 * self._chance.random() - 1)
                )
                await task.deferLater(self._reactor, seconds, lambda: None)
                for assignment in tasks:
                    self._running.discard(assignment.attempt)
                    results.append(
                        AttemptResult(attempt=assignment.attempt, outcome="succeeded", exit_code=0)
                    )
        finally:
            alive.stop()

    async def _alive(self, worker: str) -> None:
        running = tuple(RunningAttempt(attempt=a) for a in sorted(self._running))
        try:
            await self._post(f"{API_PREFIX}/workers/{worker}/alive", WorkAlive(running=running))
        except Exception as e:
            self._figures.errors += 1
            self._figures.last_error = str(e)[:200]


def big_job(tasks: int) -> dict[str, object]:
    return {
        "name": "fleet",
        "binaries": {"noop": str(NOOP)},
        "tasks": [
            {
                "id": "t-{i}",
                "foreach": {"i": {"range": [0, tasks]}},
                "binary": "noop",
                "args": [],
                "retries": 0,
            }
        ],
    }


def worker_token(local: LocalPlatformProcess, db_url: str | None) -> str:
    store = ["--db", db_url] if db_url else ["--data", str(local.home / "coordinator")]
    made = subprocess.run(
        [sys.executable, "-m", "xwch.coordinator", "token", "create", "--role", "worker", *store],
        env=local.env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return made.stdout.strip()


@contextmanager
def platform(
    members: int, db: str, keep_home: bool = False
) -> Iterator[tuple[LocalPlatformProcess, str | None]]:
    with ExitStack() as stack:
        if keep_home:
            tmp = tempfile.mkdtemp(prefix="xwch-fleet-")
            print(f"xwch-local home (kept): {tmp}/home", flush=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="xwch-fleet-"))
        # The coordinator's own defaults, not xwch-local's quicker ones for a laptop: a Work
        # Alive every 10 s, a scanner round every 10 s.
        extra = ["--alive-interval", str(ALIVE_INTERVAL), "--scan-interval", str(SCAN_INTERVAL)]
        url = None
        if db == "postgresql":
            url = stack.enter_context(fresh_postgres(ADMIN))
            extra += ["--coordinators", str(members), "--db", url]
        elif members > 1:
            raise SystemExit("--members 2 needs --db postgresql")
        local = LocalPlatformProcess(Path(tmp) / "home", workers=0, warehouses=1, extra=extra)
        local.start()
        try:
            yield local, url
        finally:
            local.stop()


def coordinator_rss(local: LocalPlatformProcess) -> dict[str, int]:
    """Each coordinator's RSS, by URL."""
    return {
        c["url"].rstrip("/"): psutil.Process(c["pid"]).memory_info().rss
        for c in local.state()["coordinators"]
    }


async def members_told(agent: Agent, url: str, token: str) -> dict[str, dict[str, Any]]:
    """``GET /coordinators``: what each member holds and last told the store, by URL."""
    headers = Headers({b"authorization": [b"Bearer " + token.encode()]})
    try:
        answer = await agent_exchange(
            agent, b"GET", f"{url}{API_PREFIX}/coordinators".encode(), headers, None
        )
        listed = json.loads(answer.body)["coordinators"]
    except Exception:
        return {}
    return {m["url"].rstrip("/"): m for m in listed}


async def measure(reactor: Any, args: argparse.Namespace, local: LocalPlatformProcess) -> None:
    config = tomllib.loads((local.home / "client.toml").read_text())
    urls = config["coordinator"].split(",")
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 100_000
    pool.retryAutomatically = False
    agent = Agent(reactor, pool=pool, connectTimeout=30)
    figures = Figures(jitter=args.task_jitter)
    workers: list[SimulatedWorker] = []
    runs: list[Deferred[None]] = []
    previous: tuple[int, int] | None = None
    baseline = sum(coordinator_rss(local).values())
    me = psutil.Process()
    for target in args.steps:
        while len(workers) < target:
            w = SimulatedWorker(
                reactor, agent, urls, args.worker_token, len(workers), args.task_seconds, figures
            )
            workers.append(w)
            runs.append(ensureDeferred(w.run()))
            if len(workers) % 50 == 0:
                # Registrations staggered a little, as real workers arrive.
                await task.deferLater(reactor, 0.05, lambda: None)
        # Settle: everyone registered and working, then measure a fresh window.
        await task.deferLater(reactor, min(10.0, args.step_seconds / 2), lambda: None)
        figures.reset()
        cpu_before = me.cpu_times()
        await task.deferLater(reactor, args.step_seconds, lambda: None)
        cpu_after = me.cpu_times()
        by_member = coordinator_rss(local)
        rss = sum(by_member.values())
        lat = sorted(figures.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        before = previous or (0, baseline)
        per_worker = f", +{(rss - before[1]) / (target - before[0]) / 1024:.1f} KiB/worker"
        generator = (
            cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        ) / args.step_seconds
        print(
            f"{target:6d} workers: WR with work p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"{figures.finished / args.step_seconds:7.1f} tasks/s  busy {figures.busy}  "
            f"errors {figures.errors}  "
            f"redirects {figures.redirects}  "
            f"coordinator RSS {rss / 2**20:6.1f} MiB{per_worker}  load generator CPU {generator:.2f}",
            flush=True,
        )
        if len(by_member) > 1:
            told = await members_told(agent, urls[0], args.worker_token)
            talking: dict[str, int] = {}
            for w in workers:
                talking[w.url] = talking.get(w.url, 0) + 1
            for url, member_rss in sorted(by_member.items()):
                m = told.get(url, {})
                print(
                    f"        member {url}: RSS {member_rss / 2**20:6.1f} MiB  "
                    f"groups {','.join(m.get('groups', ())) or '-'}  "
                    f"workers {m.get('workers', '?')}  running {m.get('running', '?')}  "
                    f"simulated workers talking to it {talking.get(url, 0)}",
                    flush=True,
                )
        if figures.errors:
            print(f"        last error: {figures.last_error}", flush=True)
        previous = (target, rss)
        if lat and p99 > 1.0:
            break
    for w in workers:
        w.stopped = True
    await pool.closeCachedConnections()


def job_group(db_url: str | None, job_id: str) -> str:
    """ ", in group gN" as the store has it (PostgreSQL only), else nothing."""
    if db_url is None:
        return ""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            group = placement.job_group_thd(conn, job_id)
    finally:
        engine.dispose()
    return f", in group {group}" if group else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000,2000,4000")
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--task-seconds", type=float, default=3.0)
    parser.add_argument("--task-jitter", type=float, default=0.2)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument(
        "--jobs", type=int, default=1, help="jobs submitted (with --members 2: 2, one a member)"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--keep-home",
        action="store_true",
        help="keep xwch-local's home (the coordinators' logs) after the run, and print where",
    )
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    most = max(args.steps)
    tasks = int(most * (len(args.steps) * (args.step_seconds + 10)) / args.task_seconds * 1.2)
    with platform(args.members, args.db, args.keep_home) as (local, db_url):
        args.worker_token = worker_token(local, db_url)
        # The tasks the steps could use at most, shared among the jobs, with a margin: a
        # member whose job runs out lends its workers to the other's.
        per_job = int(tasks / args.jobs * 1.25) if args.jobs > 1 else tasks
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dag.json"
            path.write_text(json.dumps(big_job(per_job)))
            for _ in range(args.jobs):
                started = time.monotonic()
                submitted = subprocess.run(
                    [sys.executable, "-m", "xwch.client", "submit", str(path)],
                    env=local.env(),
                    check=True,
                    capture_output=True,
                    text=True,
                )
                job_id = submitted.stdout.strip().split()[-1] if submitted.stdout.strip() else "?"
                print(
                    f"job {job_id} of {per_job} tasks submitted in "
                    f"{time.monotonic() - started:.1f} s{job_group(db_url, job_id)}",
                    flush=True,
                )
        print(
            f"{args.members} coordinator(s) on {args.db}; tasks of {args.task_seconds} s "
            f"+-{args.task_jitter:.0%}, "
            f"Work Alive every {ALIVE_INTERVAL:.0f} s, one slot per worker",
            flush=True,
        )
        task.react(lambda reactor: ensureDeferred(measure(reactor, args, local)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
