"""Fleet: how many simulated workers one coordinator sustains with Work Requests answered fast.

    .venv/bin/python bench/fleet.py [--steps 250,500,1000,2000] [--step-seconds 30]
                                    [--task-seconds 3] [--task-jitter 0.2]
                                    [--members 1|2] [--db sqlite|postgresql]

Starts xwch-local with no worker and one warehouse, its coordinator told to expect Work Alive
every 10 s and to scan every 10 s (a coordinator's defaults, not xwch-local's quicker ones),
submits one job of many trivial tasks, then runs simulated workers in this process: each
registers, keeps its own keep-alive connection, long-polls Work Requests for one slot, "runs"
each task it gets for --task-seconds without running anything (each task's length drawn within
+-20%, --task-jitter: tasks all of one length would keep the workers in step, all asking at the
same instant, as no real fleet does), reports the result with its next Work Request in one call
(as real workers do), and sends Work Alive every 10 s. Workers are added step by step; at each
step, over --step-seconds, it prints the latency of the calls that handed out work (p50, p99;
from the first try, answers "busy, retry after S" and their waits included, as a real worker
lives them), the tasks finished per second, the busy answers, errors, and the coordinator's
memory. It stops after the first step whose p99 exceeds 1 s. Memory per worker is the growth of
the serving coordinator's RSS between steps, divided by the workers added.

With --members 2 (and --db postgresql, a fresh database made and dropped), the platform has two
coordinators on one store and the simulated workers are given both URLs. Asserts nothing.
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

import psutil

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

ROOT = Path(__file__).resolve().parent.parent
NOOP = ROOT / "native/build/noop"
ALIVE_INTERVAL = 10.0
SCAN_INTERVAL = 10.0
LONG_POLL = 20.0


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
    last_error: str = ""

    def reset(self) -> None:
        self.latencies.clear()
        self.finished = 0
        self.errors = 0
        self.busy = 0


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

    async def _post(self, path: str, body: object) -> bytes:
        """POST, following a standby's redirect and leaving a member that does not answer."""
        for _ in range(4):
            try:
                answer = await agent_exchange(
                    self._agent, b"POST", (self._url + path).encode(), self._headers, encode(body)
                )
            except Exception:
                self._url = self._urls[(self._urls.index(self._url) + 1) % len(self._urls)]
                raise
            if answer.code in (307, 308):
                location = answer.headers.getRawHeaders(b"location")[0].decode()
                self._url = location[: len(location) - len(path)]
                if self._url not in self._urls:
                    self._urls.append(self._url)
                continue
            if answer.code == 503:
                raise Busy(float(json.loads(answer.body).get("retry_after", 1.0)))
            if answer.code >= 400:
                raise RuntimeError(f"HTTP {answer.code}: {answer.body[:200]!r}")
            return answer.body
        raise RuntimeError("too many redirects")

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
def platform(members: int, db: str) -> Iterator[tuple[LocalPlatformProcess, str | None]]:
    with tempfile.TemporaryDirectory(prefix="xwch-fleet-") as tmp, ExitStack() as stack:
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


def coordinator_rss(local: LocalPlatformProcess) -> int:
    """The largest RSS among the coordinators (the one serving holds the platform's memory)."""
    return max(psutil.Process(c["pid"]).memory_info().rss for c in local.state()["coordinators"])


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
        rss = coordinator_rss(local)
        lat = sorted(figures.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        per_worker = ""
        if previous is not None and target > previous[0]:
            per_worker = f", +{(rss - previous[1]) / (target - previous[0]) / 1024:.1f} KiB/worker"
        generator = (
            cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        ) / args.step_seconds
        print(
            f"{target:6d} workers: WR with work p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"{figures.finished / args.step_seconds:7.1f} tasks/s  busy {figures.busy}  "
            f"errors {figures.errors}  "
            f"coordinator RSS {rss / 2**20:6.1f} MiB{per_worker}  load generator CPU {generator:.2f}",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000,2000,4000")
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--task-seconds", type=float, default=3.0)
    parser.add_argument("--task-jitter", type=float, default=0.2)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    most = max(args.steps)
    tasks = int(most * (len(args.steps) * (args.step_seconds + 10)) / args.task_seconds * 1.2)
    with platform(args.members, args.db) as (local, db_url):
        args.worker_token = worker_token(local, db_url)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dag.json"
            path.write_text(json.dumps(big_job(tasks)))
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "xwch.client", "submit", str(path)],
                env=local.env(),
                check=True,
                capture_output=True,
            )
            print(
                f"job of {tasks} tasks submitted in {time.monotonic() - started:.1f} s", flush=True
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
