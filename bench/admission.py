"""Benchmark (e) of issue 3: admission control under 2,000 simultaneous Work Requests.

A real coordinator (``xwch-coordinator``, SQLite) with a job of ready tasks; 2,000 simulated
workers register, then all send a Work Request at once, each on its own connection. Beyond the
communication manager's limit a request is answered 503 busy with Retry-After at once: no error,
no queue. The simulated workers then do what real ones do (``xwch.retry``): wait the
Retry-After plus jitter and ask again, until every one has been served.

    .venv/bin/python bench/admission.py [--workers 2000] [--tasks 4000]

Prints: how the first burst was answered, p50/p99 latency (first answers, and every answer),
rounds until all were served, and the coordinator's memory before, at its peak and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
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

ROOT = Path(__file__).resolve().parent.parent
BINARY = "ab" * 32  # the job's program: a digest the fake warehouse claims to hold


class Memory:
    """Samples a process's resident memory every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def run(reactor: Any, args: argparse.Namespace) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        tokens = {role: token(data, role) for role in ("worker", "warehouse", "client")}
        coordinator, url = start_coordinator(data)
        try:
            await bench(reactor, args, url, tokens, coordinator.pid)
        finally:
            coordinator.terminate()
            coordinator.wait()


async def bench(
    reactor: Any, args: argparse.Namespace, url: str, tokens: dict[str, str], pid: int
) -> None:
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    api = url + "/api/v1"

    async def call(role: str, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        headers = {"Authorization": [f"Bearer {tokens[role]}"]}
        data = None if body is None else json.dumps(body).encode()
        response = await http.request(method, api + path, headers=headers, data=data)
        content = await response.content()
        return response.code, json.loads(content or b"{}"), response.headers

    # A warehouse that holds the program, and a job of ready tasks.
    code, reg, _ = await call(
        "warehouse", "POST", "/warehouses",
        {"url": "http://127.0.0.1:9", "site": "lab", "capacity": 10**12, "free": 10**12,
         "protocol": PROTOCOL_VERSION},
    )  # fmt: skip
    await call(
        "warehouse", "POST", f"/warehouses/{reg['warehouse_id']}/objects",
        {"objects": [{"digest": BINARY, "size": 6}]},
    )  # fmt: skip
    tasks = [
        {"id": f"t{n}", "binary": "prog", "args": [], "env": {}, "inputs": [], "outputs": [],
         "cost": 1, "retries": 3, "timeout": None, "after": []}
        for n in range(args.tasks)
    ]  # fmt: skip
    job = {
        "name": "admission",
        "priority": 0,
        "binaries": {
            "prog": {"any": {"digest": BINARY, "size": 6, "bundle": False, "entry": None}}
        },
        "files": {},
        "tasks": tasks,
        "results": [],
    }
    code, _, _ = await call("client", "POST", "/jobs", job)
    assert code == 201, code

    facts = {"address": "10.0.0.1", "platform": "linux-x86_64", "cores": 1, "memory": 2**30,
             "slots": 1, "performance": 1.0, "protocol": PROTOCOL_VERSION}  # fmt: skip
    limiter = defer.DeferredSemaphore(50)
    workers: list[str] = []

    async def register(n: int) -> None:
        code, reply, _ = await call("worker", "POST", "/workers", {"name": f"w{n}", **facts})
        assert code == 201, (code, reply)
        workers.append(reply["worker_id"])

    await defer.gatherResults(
        [limiter.run(lambda n=n: defer.ensureDeferred(register(n))) for n in range(args.workers)]
    )
    memory = Memory(pid)
    before = memory.now()
    print(
        f"{len(workers)} workers registered; a job of {args.tasks} ready tasks; coordinator "
        f"memory {before / 2**20:.0f} MiB"
    )

    first: list[tuple[int, float]] = []
    every: list[float] = []
    served: set[str] = set()
    rounds: dict[str, int] = {}
    errors: list[str] = []
    rng = random.Random(3)
    start_gate: defer.Deferred[None] = defer.Deferred()

    async def worker(worker_id: str) -> None:
        await start_gate
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                code, reply, headers = await call(
                    "worker", "POST", f"/workers/{worker_id}/work",
                    {"performance": 1.0, "free_slots": 1},
                )  # fmt: skip
            except Exception as e:  # a refused or reset connection: an error, not an answer
                errors.append(repr(e))
                return
            took = time.monotonic() - t0
            every.append(took)
            if attempt == 1:
                first.append((code, took))
            if code == 200:
                served.add(worker_id)
                rounds[worker_id] = attempt
                return
            if code != 503 or not headers.getRawHeaders(b"retry-after"):
                errors.append(f"{code} {reply}")
                return
            # What a worker does: the Retry-After, and equal jitter on top (xwch.retry).
            wait = float(reply.get("retry_after", 1.0))
            await task.deferLater(reactor, wait * (1 + rng.random() / 2))

    runs = [defer.ensureDeferred(worker(w)) for w in workers]
    burst = time.monotonic()
    start_gate.callback(None)
    await defer.gatherResults(runs)
    took = time.monotonic() - burst
    memory.stop()
    after = memory.now()

    codes: dict[int, int] = {}
    for code, _ in first:
        codes[code] = codes.get(code, 0) + 1
    lat = sorted(t for _, t in first)
    busy = sorted(t for code, t in first if code == 503)
    everything = sorted(every)

    def pct(values: list[float], p: float) -> str:
        if not values:
            return "-"
        return f"{values[min(len(values) - 1, int(p * len(values)))] * 1000:.0f} ms"

    print(
        f"burst of {len(workers)} simultaneous Work Requests: "
        + ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()))
        + f"; errors: {len(errors)}"
    )
    print(
        f"  first answers: p50 {pct(lat, 0.5)}, p99 {pct(lat, 0.99)}; "
        f"the 503 busy ones: p50 {pct(busy, 0.5)}, p99 {pct(busy, 0.99)}"
    )
    print(
        f"  all {len(everything)} answers (retries included): p50 {pct(everything, 0.5)}, "
        f"p99 {pct(everything, 0.99)}"
    )
    print(
        f"  every worker served after {took:.1f} s; tries per worker: median "
        f"{statistics.median(rounds.values()):.0f}, max {max(rounds.values())}"
    )
    print(
        f"  coordinator memory: {before / 2**20:.0f} MiB before, peak {memory.peak / 2**20:.0f}"
        f" MiB, {after / 2**20:.0f} MiB after"
    )
    if errors:
        print(f"  first errors: {errors[:3]}")
    code, status, _ = await call("client", "GET", "/status")
    comm = status["communication"]
    print(
        f"  communication manager: at most {comm['max_work_requests']} Work Requests at once, "
        f"{comm['work_requests_refused']} told to retry"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=4000)
    args = parser.parse_args()
    os.environ.setdefault("XWCH_HOME", tempfile.mkdtemp())
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
