"""Benchmarks of issue 19: what open dashboards cost the coordinator, and a big DAG's page.

    .venv/bin/python bench/dashboard.py cpu [--workers 1000] [--dashboards 5] [--seconds 60]
    .venv/bin/python bench/dashboard.py dag [--tasks 10000]

``cpu``: a real coordinator (SQLite) and simulated workers that register, send Work Alives every
5 s, and run a job's tasks (each "runs" 10 to 20 s, then its result comes with the next Work
Request). The coordinator's CPU time is measured over a window with no dashboard, then over a
window of the same length with DASHBOARDS open, each doing what the page's script does: hold the
event stream open and fetch the page's content again at each event (the jobs page, a job's page,
the workers page, the network page, the platform page, in turn). Goal: < 5 % more CPU.

``dag``: a job of TASKS tasks and a gather step; the time its page takes to load in headless
Chromium (navigation start to the load event) and the server's time to render it. Goal: < 2 s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
import treq
from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool

from bench.lone_coordinator import start_coordinator, token
from xwch.protocol.wire import PROTOCOL_VERSION

BINARY = "ab" * 32  # the job's program: a digest the fake warehouse claims to hold
PAGES = ("", "jobs/{job}", "workers", "network", "platform")


def wire_job(name: str, tasks: int, gather: bool) -> dict[str, Any]:
    common = {"binary": "prog", "args": [], "env": {}, "inputs": [], "outputs": [], "cost": 1,
              "retries": 3, "timeout": None}  # fmt: skip
    specs = [{"id": f"map-{n}", **common, "after": []} for n in range(tasks)]
    if gather:
        specs.append({"id": "gather", **common, "after": [f"map-{n}" for n in range(tasks)]})
    return {
        "name": name,
        "priority": 0,
        "binaries": {
            "prog": {"any": {"digest": BINARY, "size": 6, "bundle": False, "entry": None}}
        },
        "files": {},
        "tasks": specs,
        "results": [],
    }


class Platform:
    """A coordinator with a warehouse that holds the program; calls by role."""

    def __init__(self, reactor: Any, url: str, tokens: dict[str, str]) -> None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 2000
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        self.url = url
        self.tokens = tokens

    async def call(self, role: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {self.tokens[role]}"]}
        data = None if body is None else json.dumps(body).encode()
        response = await self.http.request(
            method, self.url + "/api/v1" + path, headers=headers, data=data
        )
        content = await response.content()
        return response.code, json.loads(content or b"{}")

    async def prepare(self, job: dict[str, Any]) -> str:
        code, reg = await self.call(
            "warehouse", "POST", "/warehouses",
            {"url": "http://127.0.0.1:9", "site": "lab", "capacity": 10**12, "free": 10**12,
             "protocol": PROTOCOL_VERSION},
        )  # fmt: skip
        await self.call(
            "warehouse", "POST", f"/warehouses/{reg['warehouse_id']}/objects",
            {"objects": [{"digest": BINARY, "size": 6}]},
        )  # fmt: skip
        code, created = await self.call("client", "POST", "/jobs", job)
        assert code == 201, (code, created)
        self.warehouse = reg["warehouse_id"]
        return str(created["id"])

    async def heartbeats(self, reactor: Any, running: list[bool]) -> None:
        """The fake warehouse's heartbeats: silent, it would be lost, and the job with it."""
        while running[0]:
            await self.call(
                "warehouse", "POST", f"/warehouses/{self.warehouse}/heartbeat",
                {"capacity": 10**12, "free": 10**12},
            )  # fmt: skip
            await task.deferLater(reactor, 5.0)

    async def session_cookie(self) -> str:
        _, login = await self.call("client", "POST", "/dashboard/logins")
        response = await self.http.get(self.url + login["path"], allow_redirects=False)
        await response.content()
        cookie = response.headers.getRawHeaders(b"set-cookie")[0].decode()
        return cookie.split(";")[0]


# What the simulated workers saw, for the report.
SEEN: dict[str, int] = {}


def seen(what: str) -> None:
    SEEN[what] = SEEN.get(what, 0) + 1


async def simulated_worker(
    reactor: Any, platform: Platform, n: int, running: list[bool], rng: random.Random
) -> None:
    facts = {"name": f"sim-{n}", "address": "10.0.0.1", "platform": "linux-x86_64", "cores": 1,
             "memory": 2**30, "slots": 1, "performance": 1.0, "protocol": PROTOCOL_VERSION}  # fmt: skip
    code, reg = await platform.call("worker", "POST", "/workers", facts)
    assert code == 201, reg
    worker = reg["worker_id"]
    holding: list[str] = []

    async def alive() -> None:
        while running[0]:
            await task.deferLater(reactor, 5.0)
            await platform.call(
                "worker", "POST", f"/workers/{worker}/alive",
                {"running": [{"attempt": a} for a in holding]},
            )  # fmt: skip

    beats = defer.ensureDeferred(alive())
    code, answer = await platform.call(
        "worker", "POST", f"/workers/{worker}/work", {"performance": 1.0, "free_slots": 1}
    )
    while running[0]:
        given = [a["attempt"] for a in answer.get("tasks") or []]
        seen(f"work answered {code}" + (" with tasks" if given else ""))
        if not given:
            await task.deferLater(reactor, 5.0)
            code, answer = await platform.call(
                "worker", "POST", f"/workers/{worker}/work", {"performance": 1.0, "free_slots": 1}
            )
            continue
        holding[:] = given
        await task.deferLater(reactor, rng.uniform(10.0, 20.0))
        report = {
            "results": [{"attempt": a, "outcome": "succeeded", "duration": 5.0} for a in given],
            "work": {"performance": 1.0, "free_slots": 1},
        }
        code, answer = await platform.call("worker", "POST", f"/workers/{worker}/results", report)
        seen(f"results answered {code}")
        holding[:] = []
    await beats


async def dashboard(reactor: Any, platform: Platform, page: str, open_: list[bool]) -> int:
    """What the page's script does: an event stream, and the content fetched at each event."""
    cookie = await platform.session_cookie()
    headers = {"Cookie": [cookie]}
    fetches = 0
    response = await platform.http.get(platform.url + "/dashboard/events", headers=headers)
    events: defer.DeferredQueue[bytes] = defer.DeferredQueue()
    done = treq.collect(response, events.put)
    while open_[0]:
        chunk = await events.get()
        if b"data:" in chunk:
            answer = await platform.http.get(
                platform.url + f"/dashboard/{page}?fragment=1", headers=headers
            )
            await answer.content()
            fetches += 1
            seen(f"dashboard refreshes of /{page.split('/')[0]}")
    done.cancel()
    return fetches


async def cpu(reactor: Any, args: argparse.Namespace) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        tokens = {r: token(data, r) for r in ("worker", "warehouse", "client")}
        coordinator, url = start_coordinator(data)
        try:
            platform = Platform(reactor, url, tokens)
            job = await platform.prepare(wire_job("cpu", args.tasks, gather=False))
            running = [True]
            rng = random.Random(19)
            beating = defer.ensureDeferred(platform.heartbeats(reactor, running))
            workers = [
                defer.ensureDeferred(simulated_worker(reactor, platform, n, running, rng))
                for n in range(args.workers)
            ]
            process = psutil.Process(coordinator.pid)
            await task.deferLater(reactor, args.warmup)

            def cpu_seconds() -> float:
                times = process.cpu_times()
                return float(times.user + times.system)

            start = cpu_seconds()
            await task.deferLater(reactor, args.seconds)
            before = cpu_seconds() - start
            open_ = [True]
            pages = [PAGES[i % len(PAGES)].format(job=job) for i in range(args.dashboards)]
            boards = [defer.ensureDeferred(dashboard(reactor, platform, p, open_)) for p in pages]
            await task.deferLater(reactor, 3.0)  # logged in and listening
            start = cpu_seconds()
            await task.deferLater(reactor, args.seconds)
            with_boards = cpu_seconds() - start
            open_[0] = False
            for d in boards:
                d.addErrback(lambda _: None)  # closed by the cancel: nothing to report
                d.cancel()
            await task.deferLater(reactor, 3.0)
            start = cpu_seconds()
            await task.deferLater(reactor, args.seconds)
            after = cpu_seconds() - start
            running[0] = False
            _, summary = await platform.call("client", "GET", f"/jobs/{job}")
            print(
                f"{args.workers} simulated workers, a job of {args.tasks} tasks "
                f"({summary['counts'].get('done', 0)} done by the end, job {summary['state']}); "
                f"windows of {args.seconds:g} s"
            )
            print("  the workers saw: " + ", ".join(f"{n} x {w}" for w, n in sorted(SEEN.items())))
            without = (before + after) / 2
            print(
                f"  coordinator CPU, % of a core: {before / args.seconds * 100:.1f} with no "
                f"dashboard, {with_boards / args.seconds * 100:.1f} with {args.dashboards} open, "
                f"{after / args.seconds * 100:.1f} with none again: "
                f"{(with_boards - without) / max(without, 1e-9) * 100:+.1f} % against the mean "
                f"of the two windows without"
            )
            for d in [*workers, beating]:
                d.addErrback(lambda _: None)  # stopped by the cancel: nothing to report
                d.cancel()
        finally:
            coordinator.terminate()
            coordinator.wait()


async def dag(reactor: Any, args: argparse.Namespace) -> None:
    from tests.integration.browser import headless_chromium

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        tokens = {r: token(data, r) for r in ("worker", "warehouse", "client")}
        coordinator, url = start_coordinator(data)
        try:
            platform = Platform(reactor, url, tokens)
            job = await platform.prepare(wire_job("dag", args.tasks, gather=True))
            cookie = await platform.session_cookie()
            renders = []
            for _ in range(3):
                t0 = time.monotonic()
                response = await platform.http.get(
                    f"{url}/dashboard/jobs/{job}", headers={"Cookie": [cookie]}
                )
                body = await response.content()
                renders.append(time.monotonic() - t0)
            _, login = await platform.call("client", "POST", "/dashboard/logins")
            with headless_chromium(data / "chromium") as browser:
                browser.get(url + login["path"])
                loads = []
                for _ in range(3):
                    browser.get(f"{url}/dashboard/jobs/{job}")
                    loads.append(
                        browser.execute_script(
                            "const n = performance.getEntriesByType('navigation')[0];"
                            "return n.loadEventEnd - n.startTime;"
                        )
                        / 1000
                    )
                nodes = len(browser.find_elements("css selector", "svg.dag rect.node"))
            print(f"a job of {args.tasks} tasks and a gather step ({nodes} nodes drawn)")
            print(
                f"  page of {len(body) / 2**20:.1f} MiB; server render "
                f"{min(renders):.2f} s (best of 3, first {renders[0]:.2f} s); load in Chromium "
                f"{min(loads):.2f} s (best of 3, first {loads[0]:.2f} s, worst {max(loads):.2f} s)"
            )
        finally:
            coordinator.terminate()
            coordinator.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--workers", type=int, default=1000)
    c.add_argument("--tasks", type=int, default=40_000)
    c.add_argument("--dashboards", type=int, default=5)
    c.add_argument("--seconds", type=float, default=60.0)
    c.add_argument("--warmup", type=float, default=20.0)
    d = sub.add_parser("dag")
    d.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    run = cpu if args.bench == "cpu" else dag
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
