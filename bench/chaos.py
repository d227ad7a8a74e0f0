"""Chaos: a 2,000-task map/reduce job while processes are killed, against a calm run.

    .venv/bin/python bench/chaos.py [--copies 250] [--seed 1]

The job maps the 8 word-count shards, each ``--copies`` times (2,000 map tasks by default),
and reduces them all. It runs once calm, then once while a chaos loop SIGKILLs a random worker
every 3 s, a warehouse once and the coordinator twice; xwch-local starts each again. Prints,
for each run: completed or not, output right or not, attempts per task, time; then the extra
time the chaos cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native" / "build"
SHARDS = ROOT / "examples" / "wordcount" / "shards"
WORKER_KILL_PERIOD = 3.0


def job(copies: int) -> dict[str, Any]:
    return {
        "name": "chaos",
        "binaries": {"map": str(NATIVE / "wc-map"), "reduce": str(NATIVE / "wc-reduce")},
        "files": {f"shard-{s}": str(SHARDS / f"shard-{s}.txt") for s in range(8)},
        "tasks": [
            {"id": "map-{s}-{c}", "foreach": {"s": {"range": [0, 8]}, "c": {"range": [0, copies]}},
             "binary": "map", "args": ["shard.txt", "counts.tsv"],
             "inputs": {"shard.txt": "shard-{s}"}, "outputs": ["counts.tsv"]},
            {"id": "reduce", "binary": "reduce", "args": ["counts", "total.tsv"],
             "inputs": {"counts/": "map-*/counts.tsv"}, "outputs": ["total.tsv"]},
        ],
        "results": ["reduce/total.tsv"],
    }  # fmt: skip


def expected_total(copies: int) -> str:
    """What the reduce must produce: the example's word counts, each times ``copies``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "maps").mkdir()
        for s in range(8):
            out = folder / "maps" / f"{s}.tsv"
            subprocess.run(
                [NATIVE / "wc-map", SHARDS / f"shard-{s}.txt", out], check=True, capture_output=True
            )
        subprocess.run(
            [NATIVE / "wc-reduce", folder / "maps", folder / "total.tsv"],
            check=True,
            capture_output=True,
        )
        lines = (folder / "total.tsv").read_text().splitlines()
    return "".join(f"{w}\t{int(n) * copies}\n" for w, n in (line.split("\t") for line in lines))


def client(platform: LocalPlatformProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xwch.client", *args],
        env=platform.env(),
        capture_output=True,
        text=True,
    )


class Chaos:
    """Kills processes of a running xwch-local on a schedule, until stopped."""

    def __init__(self, platform: LocalPlatformProcess, rng: random.Random) -> None:
        self.platform = platform
        self.rng = rng
        self.kills: Counter[str] = Counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def kill(self, what: str, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            self.kills[what] += 1
        except ProcessLookupError:
            pass

    def run(self) -> None:
        started = time.monotonic()
        plan = [(10.0, "warehouse"), (15.0, "coordinator"), (40.0, "coordinator")]
        next_worker = WORKER_KILL_PERIOD
        while not self.stopped.wait(0.1):
            elapsed = time.monotonic() - started
            state = self.platform.state()
            if elapsed >= next_worker:
                next_worker += WORKER_KILL_PERIOD
                worker = self.rng.choice(state["workers"])
                self.kill("worker", worker["pid"])
            while plan and elapsed >= plan[0][0]:
                _, what = plan.pop(0)
                if what == "warehouse":
                    self.kill("warehouse", self.rng.choice(state["warehouses"])["pid"])
                else:
                    self.kill("coordinator", state["coordinator"]["pid"])


def run_once(folder: Path, copies: int, expected: str, chaos_seed: int | None) -> dict[str, Any]:
    home = folder / ("chaos" if chaos_seed is not None else "calm")
    platform = LocalPlatformProcess(home, workers=2, slots=2, warehouses=2)
    platform.start()
    chaos = None
    try:
        dag = folder / "dag.json"
        dag.write_text(json.dumps(job(copies)))
        started = time.monotonic()
        submitted = client(platform, "submit", str(dag))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        if chaos_seed is not None:
            chaos = Chaos(platform, random.Random(chaos_seed))
            chaos.thread.start()
        # `wait` rides out short coordinator outages; a longer one ends it: wait again.
        for _ in range(20):
            waited = client(platform, "wait", job_id)
            if waited.returncode in (0, 1):
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
        if chaos is not None:
            chaos.stopped.set()
            chaos.thread.join()
        status = json.loads(client(platform, "status", job_id, "--json").stdout)
        tasks = json.loads(client(platform, "tasks", job_id, "--json").stdout)["tasks"]
        out = folder / f"out-{home.name}"
        client(platform, "results", job_id, "-o", str(out))
        total = out / "reduce" / "total.tsv"
        correct = total.exists() and total.read_text() == expected
    finally:
        if chaos is not None:
            chaos.stopped.set()
        platform.stop()
    attempts = [t["attempts"] for t in tasks]
    return {
        "state": status["state"],
        "done": status["counts"]["done"],
        "total": status["total"],
        "correct": correct,
        "seconds": elapsed,
        "attempts_mean": sum(attempts) / len(attempts),
        "attempts_max": max(attempts),
        "kills": dict(chaos.kills) if chaos is not None else {},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=250, help="maps of each shard (default 250)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native")], check=True)
    expected = expected_total(args.copies)
    with tempfile.TemporaryDirectory(prefix="xwch-chaos-") as tmp:
        calm = run_once(Path(tmp), args.copies, expected, None)
        chaotic = run_once(Path(tmp), args.copies, expected, args.seed)
    for name, r in (("calm", calm), ("chaos", chaotic)):
        print(
            f"{name:6} {r['state']:9} {r['done']}/{r['total']} done, output "
            f"{'correct' if r['correct'] else 'WRONG'}, {r['seconds']:.1f} s, attempts per task "
            f"{r['attempts_mean']:.3f} (max {r['attempts_max']})"
            + (f", killed {r['kills']}" if r["kills"] else "")
        )
    extra = chaotic["seconds"] - calm["seconds"]
    print(f"extra time under chaos: {extra:.1f} s ({100 * extra / calm['seconds']:.0f}%)")
    ok = all(r["state"] == "done" and r["correct"] for r in (calm, chaotic))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
