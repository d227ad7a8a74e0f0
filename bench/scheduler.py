"""The scheduler alone, in one process: decisions per second, and a 100,000-task submission.

    .venv/bin/python bench/scheduler.py decisions [--tasks 100000] [--workers 1000] [--sites 3]
    .venv/bin/python bench/scheduler.py submit [--tasks 100000] [--db URL]
    .venv/bin/python bench/scheduler.py wake [--tasks 10000] [--workers 1000]

``decisions`` fills a scheduler with N ready tasks, each reading one 8 MiB object stored at one
of the sites, in two jobs of two users, and has 1,000 simulated workers (spread over the sites,
of performance 0.5 to 2.0 and 1 to 4 slots) send Work Requests, in random order, until every
task is taken. Only the scheduler's ``pick`` is timed. It prints tasks chosen per second, the
latency of one Work Request, and how many tasks ran at the site of their data; for the locality
policy and for FIFO.

``submit`` writes a ``foreach`` job file of N tasks, then times the two halves of a submission:
the client's reading, validation and expansion of the file, and the coordinator's check of the
wire form and its writing of the job and its N tasks to the store (SQLite in a temporary folder
unless ``--db`` names another database), with the peak memory of the process.

``wake`` builds a whole coordinator in the process (SQLite in a temporary folder), registers
1,000 workers of 2 slots, and has each send a Work Request that waits for work (``"wait"``,
docs/protocol.md); then a job of N tasks is submitted. It times how long after the job's
creation every waiting request had its answer, and how many got tasks.

Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xwch import dag  # noqa: E402
from xwch.coordinator.catalog import Catalog  # noqa: E402
from xwch.coordinator.estimates import TransferEstimates  # noqa: E402
from xwch.coordinator.locality import LocalityScheduler  # noqa: E402
from xwch.coordinator.scheduler import (  # noqa: E402
    FifoScheduler,
    ReadyTask,
    Scheduler,
    WorkerView,
)
from xwch.coordinator.tasks import TasksManager  # noqa: E402
from xwch.store.database import Database, default_url  # noqa: E402

MIB = 1 << 20


class SiteTable:
    """Where each object is: what the catalog answers the scheduler, without the catalog."""

    def __init__(self, sites: dict[str, set[str]]) -> None:
        self.sites = sites

    def holder_sites(self, digest: str) -> Collection[str]:
        return self.sites.get(digest, ())


def _digest(n: int) -> str:
    return f"{n:064x}"


def decisions(policy: str, tasks: int, workers: int, sites: int, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"site-{i}" for i in range(sites)]
    home = {_digest(n): rng.choice(names) for n in range(tasks)}
    table = SiteTable({d: {s} for d, s in home.items()})
    scheduler: Scheduler
    if policy == "fifo":
        scheduler = FifoScheduler()
    else:
        scheduler = LocalityScheduler(TransferEstimates(table))
    views = [
        WorkerView(
            f"k{i}",
            "linux-x86_64",
            round(rng.uniform(0.5, 2.0), 2),
            names[i % sites],
            rng.randint(1, 4),
        )
        for i in range(workers)
    ]
    for view in views:
        scheduler.worker_seen(view)
    start = time.perf_counter()
    for n in range(tasks):
        job, owner = ("j1", 1) if n % 2 == 0 else ("j2", 2)
        scheduler.add_ready(
            ReadyTask(
                key=(job, f"t{n}"),
                owner=owner,
                priority=0,
                job_order=owner,
                position=n,
                platforms=None,
                cost=float(rng.randint(1, 10)),
                inputs=((_digest(n), 8 * MIB),),
            )
        )
    filled = time.perf_counter() - start
    latencies: list[float] = []
    taken = local = 0
    idle_requests = 0
    while len(scheduler):
        view = rng.choice(views)
        t0 = time.perf_counter()
        picked = scheduler.pick(view, view.slots)
        latencies.append(time.perf_counter() - t0)
        if not picked:
            idle_requests += 1
            if idle_requests > 100 * workers:
                break  # only tasks no worker should take are left
            continue
        taken += len(picked)
        for key in picked:
            n = int(key[1][1:])
            local += home[_digest(n)] == view.site
            # The attempt ends at once: fair share sees a steady state, caches grow.
            scheduler.attempt_ended(key, 1 if key[0] == "j1" else 2, view.id, 1.0, 1.0)
            scheduler.objects_cached(view.id, [_digest(n)])
    busy = sum(latencies)
    latencies.sort()
    print(
        f"{policy:9} {tasks} tasks, {workers} workers, {sites} sites: "
        f"filled in {filled:.2f} s; {taken / busy:,.0f} tasks chosen per second "
        f"({len(latencies):,} Work Requests, p50 {latencies[len(latencies) // 2] * 1e6:.0f} us, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e6:.0f} us); "
        f"{100 * local / max(taken, 1):.1f}% at their data's site; {len(scheduler)} left"
    )


def _peak_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def submit(tasks: int, db_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        job_file = folder / "dag.json"
        job_file.write_text(
            json.dumps(
                {
                    "name": "big",
                    "binaries": {"noop": str(ROOT / "native/build/noop")},
                    "tasks": [
                        {
                            "id": "t-{i}",
                            "foreach": {"i": {"range": [0, tasks]}},
                            "binary": "noop",
                            "args": ["out.txt", "{i}"],
                            "outputs": ["out.txt"],
                        }
                    ],
                    "results": [],
                }
            )
        )
        before = _peak_mib()
        t0 = time.perf_counter()
        job = dag.load_job_file(job_file)
        noop = ROOT / "native/build/noop"
        data = noop.read_bytes()
        job = job.with_digests({str(noop): (hashlib.sha256(data).hexdigest(), len(data))})
        wire = job.to_wire()
        client_seconds = time.perf_counter() - t0
        client_peak = _peak_mib()
        url = db_url or default_url(folder)

        async def run(reactor: object) -> None:
            db = Database(reactor, url)  # type: ignore[arg-type]
            db.start()
            try:
                await db.migrate()
                catalog = Catalog(reactor, db, b"k" * 32)  # type: ignore[arg-type]
                warehouse = await catalog.register("http://127.0.0.1:1", "lab", 1, 1)
                variant = job.binaries["noop"].variants[dag.PLATFORM_ANY]
                assert variant.digest is not None and variant.size is not None
                await catalog.add_objects(warehouse.id, [(variant.digest, variant.size)])
                manager = TasksManager(
                    reactor,  # type: ignore[arg-type]
                    db,
                    catalog,
                    LocalityScheduler(TransferEstimates(catalog)),
                )
                t1 = time.perf_counter()
                await manager.submit(json.loads(json.dumps(wire)), owner=1)
                coordinator_seconds = time.perf_counter() - t1
                print(
                    f"submit {tasks:,} tasks ({url.split(':', 1)[0]}): client reads, checks "
                    f"and expands the file in {client_seconds:.2f} s (peak {client_peak:.0f} MiB, "
                    f"{before:.0f} MiB before); the coordinator checks and stores it in "
                    f"{coordinator_seconds:.2f} s ({tasks / coordinator_seconds:,.0f} tasks/s); "
                    f"process peak {_peak_mib():.0f} MiB"
                )
            finally:
                db.stop()

        react(lambda reactor: ensureDeferred(run(reactor)))


def wake(tasks: int, workers: int) -> None:
    from xwch.coordinator.assembly import CoordinatorConfig, make_coordinator
    from xwch.coordinator.web import ApiRequest
    from xwch.protocol.worker import HostFacts, WorkRequest
    from xwch.store import tokens

    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        url = default_url(folder)
        noop = ROOT / "native/build/noop"
        data = noop.read_bytes()
        digest = hashlib.sha256(data).hexdigest()

        async def run(reactor: object) -> None:
            coordinator = await make_coordinator(
                CoordinatorConfig(db_url=url, listen="tcp:0:interface=127.0.0.1"),
                reactor,  # type: ignore[arg-type]
            )
            db = coordinator.db
            try:
                secret = await db.write(tokens.create_token_thd, "worker", "bench", 0.0)
                token = await db.read(tokens.find_token_thd, secret)
                warehouse = await coordinator.catalog.register("http://127.0.0.1:1", "lab", 1, 1)
                await coordinator.catalog.add_objects(warehouse.id, [(digest, len(data))])
                ids = []
                for n in range(workers):
                    facts = HostFacts(f"w{n}", "127.0.0.1", "linux-x86_64", 2, 2**30, 2, 1.0)
                    ids.append((await coordinator.workers.register(token, facts)).id)
                answered: list[float] = []
                got = 0

                def heard(answer: tuple[int, Any]) -> None:
                    nonlocal got
                    answered.append(time.perf_counter())
                    got += len(answer[1].tasks)

                # As the router hands it over: the body already decoded into its message.
                body = WorkRequest(performance=1.0, free_slots=2, wait=30)
                waits = [
                    ensureDeferred(
                        coordinator.api.work_request(
                            ApiRequest(token, {"worker": worker_id}, {}, body)
                        )
                    ).addCallback(heard)
                    for worker_id in ids
                ]
                print(f"{workers} workers waiting ({len(coordinator.waiting)} held)")
                wire = {
                    "name": "wake",
                    "priority": 0,
                    "binaries": {
                        "noop": {
                            "any": {
                                "digest": digest,
                                "size": len(data),
                                "bundle": False,
                                "entry": None,
                            }
                        }
                    },
                    "files": {},
                    "tasks": [
                        {
                            "id": f"t{n}",
                            "binary": "noop",
                            "args": ["out.txt", str(n)],
                            "env": {},
                            "inputs": [],
                            "outputs": ["out.txt"],
                            "cost": 1,
                            "retries": 0,
                            "timeout": None,
                            "after": [],
                        }
                        for n in range(tasks)
                    ],
                    "results": [],
                }
                t0 = time.perf_counter()
                await coordinator.tasks.submit(wire, owner=1)
                created = time.perf_counter()
                for d in waits:
                    await d
                print(
                    f"job of {tasks:,} tasks created in {created - t0:.2f} s; every one of "
                    f"{workers:,} waiting Work Requests answered {max(answered) - created:.3f} s "
                    f"after (first {min(answered) - created:.3f} s); {got:,} tasks given, "
                    f"{len(coordinator.waiting)} requests still held"
                )
            finally:
                db.stop()

        react(lambda reactor: ensureDeferred(run(reactor)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decisions", help="tasks chosen per second")
    d.add_argument("--tasks", type=int, default=100_000)
    d.add_argument("--workers", type=int, default=1000)
    d.add_argument("--sites", type=int, default=3)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--policy", choices=["locality", "fifo", "both"], default="both")
    s = sub.add_parser("submit", help="submitting and validating a big foreach job")
    s.add_argument("--tasks", type=int, default=100_000)
    s.add_argument("--db", metavar="URL", help="store URL (default: SQLite in a temp folder)")
    w = sub.add_parser("wake", help="1,000 workers waiting for work, then a job")
    w.add_argument("--tasks", type=int, default=10_000)
    w.add_argument("--workers", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "wake":
        wake(args.tasks, args.workers)
        return 0
    if args.command == "decisions":
        policies = ["locality", "fifo"] if args.policy == "both" else [args.policy]
        for policy in policies:
            decisions(policy, args.tasks, args.workers, args.sites, args.seed)
    else:
        submit(args.tasks, args.db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
