"""What checkpoints buy and cost, measured on a whole platform on loopback (xwch-local).

    .venv/bin/python bench/checkpoints.py [--part kill|delta|both]

kill: the checkpoint example (native/steps: 40 steps of 0.5 s, checkpoint every 2 s). The job
is run undisturbed, then with its worker SIGKILLed once the task has run 60% of its steps,
with checkpoints and without. Prints the step each relaunch resumed at and each job's time
(submit to end, the coordinator's clock) against the undisturbed one.

delta: a task keeping a 200 MiB state in its checkpoint directory (one file, rewritten through a
rename at each step), 5% of it changed per step, one step per save period. Prints the bytes
each save sent to the warehouse (from the worker's log) and the program's slowdown: the mean
time of a step's computation with checkpoints saved every period, against the same task
without a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent
STEPS = ROOT / "native" / "build" / "steps"
RESUMED = re.compile(r"steps: (?:resumed|started) at step (\d+)")
WORK = re.compile(r"steps: step \d+ work ([0-9.]+)")
SAVED = re.compile(r"checkpoint \w+ of attempt \w+ saved: (\d+) bytes, (\d+) sent")
MIB = 1 << 20


def client(platform: LocalPlatformProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "xwch.client", *args],
        env=platform.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def task_row(platform: LocalPlatformProcess, job_id: str) -> dict[str, Any]:
    tasks = json.loads(client(platform, "tasks", job_id, "--json"))["tasks"]
    return tasks[0]  # type: ignore[no-any-return]


def submit(platform: LocalPlatformProcess, folder: Path, task: dict[str, Any]) -> str:
    job = {"name": "bench", "binaries": {"steps": str(STEPS)}, "tasks": [task]}
    path = folder / f"dag-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(job))
    return client(platform, "submit", str(path)).strip()


def job_seconds(platform: LocalPlatformProcess, job_id: str) -> float:
    client(platform, "wait", job_id)
    summary = json.loads(client(platform, "status", job_id, "--json"))
    return float(summary["ended"] - summary["created"])


def worker_pid(platform: LocalPlatformProcess, worker: str) -> int:
    for w in platform.state()["workers"]:
        if worker.endswith(w["name"].replace("worker-", "-w")):
            return int(w["pid"])
    raise LookupError(worker)


def run_kill(folder: Path, checkpoint: bool, kill_at: float | None) -> tuple[float, int | None]:
    """(the job's seconds, the step its last attempt started at)."""
    task: dict[str, Any] = {
        "id": "long", "binary": "steps", "outputs": ["out.txt"],
        "args": ["--steps", "40", "--sleep", "0.5", "ck", "out.txt"],
    }  # fmt: skip
    if checkpoint:
        task.update({"checkpoint": "ck/", "checkpoint_every": 2})
    home = folder / f"home-{time.monotonic_ns()}"
    platform = LocalPlatformProcess(home, workers=2, slots=1, warehouses=1)
    platform.start()
    try:
        job_id = submit(platform, folder, task)
        if kill_at is not None:
            while (row := task_row(platform, job_id))["started"] is None:
                time.sleep(0.1)
            # A benchmark, not a test: wall-clock time is what is measured.
            time.sleep(max(0.0, row["started"] + kill_at - time.time()))
            os.kill(worker_pid(platform, task_row(platform, job_id)["worker"]), signal.SIGKILL)
        seconds = job_seconds(platform, job_id)
        found = RESUMED.search(client(platform, "logs", job_id, "long"))
        return seconds, int(found.group(1)) if found else None
    finally:
        platform.stop()


def part_kill(folder: Path) -> None:
    undisturbed, _ = run_kill(folder, checkpoint=True, kill_at=None)
    # 60% of 40 steps of 0.5 s: 12 s into the task.
    killed, resumed = run_kill(folder, checkpoint=True, kill_at=12.0)
    restarted, from_step = run_kill(folder, checkpoint=False, kill_at=12.0)
    print("kill: 40 steps x 0.5 s, checkpoint every 2 s, worker SIGKILLed at 60% (step 24)")
    print(f"  undisturbed job:               {undisturbed:6.1f} s")
    print(
        f"  killed, with checkpoints:      {killed:6.1f} s ({killed / undisturbed:.2f}x), "
        f"relaunch resumed at step {resumed}"
    )
    print(
        f"  killed, without checkpoints:   {restarted:6.1f} s ({restarted / undisturbed:.2f}x), "
        f"relaunch started at step {from_step}"
    )


def calibrate_work(seconds: float) -> int:
    """Millions of iterations of steps' computation that take about ``seconds`` here."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(STEPS), "--steps", "1", "--sleep", "0", "--work", "50", f"{tmp}/ck", f"{tmp}/o"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    found = WORK.search(out)
    assert found is not None
    return max(1, round(50 * seconds / float(found.group(1))))


def run_delta(
    folder: Path, checkpoint: bool, steps: int, work: int, every: float
) -> tuple[list[float], list[tuple[int, int]], float]:
    """(each step's computation time, each save's (content, bytes sent), the worker's CPU
    seconds)."""
    task: dict[str, Any] = {
        "id": "big", "binary": "steps", "outputs": ["out.txt"],
        "args": ["--steps", str(steps), "--sleep", "0", "--work", str(work),
                 "--state-mib", "200", "--change-percent", "5", "ck", "out.txt"],
    }  # fmt: skip
    if checkpoint:
        task.update({"checkpoint": "ck/", "checkpoint_every": every})
    home = folder / f"home-{time.monotonic_ns()}"
    platform = LocalPlatformProcess(home, workers=1, slots=1, warehouses=1)
    platform.start()
    try:
        worker = psutil.Process(int(platform.state()["workers"][0]["pid"]))
        job_id = submit(platform, folder, task)
        job_seconds(platform, job_id)
        cpu = worker.cpu_times()
        log = client(platform, "logs", job_id, "big")
        worker_log = (home / "logs" / "worker-1.log").read_text()
    finally:
        platform.stop()
    works = [float(w) for w in WORK.findall(log)]
    saves = [(int(c), int(s)) for c, s in SAVED.findall(worker_log)]
    return works, saves, cpu.user + cpu.system


def part_delta(folder: Path) -> None:
    # One step per save period: about 4 s of computation and the state's rewrite, so that a
    # save of the changes (a few seconds on a loaded two-core machine) ends before the next.
    every = 5.0
    work = calibrate_work(4.0)
    steps = 12
    plain, _, plain_cpu = run_delta(folder, checkpoint=False, steps=steps, work=work, every=every)
    saving, saves, saving_cpu = run_delta(folder, True, steps=steps, work=work, every=every)
    print(
        f"delta: 200 MiB checkpoint, 5% changed per step, {steps} steps, a save every {every:g} s"
    )
    for number, (content, sent) in enumerate(saves, 1):
        print(f"    save {number:2d}: {content / MIB:6.1f} MiB held, {sent / MIB:6.1f} MiB sent")
    # The first saves send everything there is; from then on, what changed between saves.
    steady = [sent for content, sent in saves if content > 0][1:]
    if steady:
        print(
            f"  saves after the first full one: {statistics.mean(steady) / MIB:.1f} MiB sent on "
            f"average, {max(steady) / MIB:.1f} MiB at most (goal <= 15 MiB)"
        )
    slowdown = statistics.median(saving) / statistics.median(plain) - 1
    print(
        f"  computation per step (median): {statistics.median(plain):.3f} s without "
        f"checkpoints, {statistics.median(saving):.3f} s with: {100 * slowdown:+.1f}% "
        "(goal < 5%; wall time, as noisy as the machine's load)"
    )
    computing = sum(plain)
    print(
        f"  the worker's CPU: {plain_cpu:.1f} s without checkpoints, {saving_cpu:.1f} s with; "
        f"the saves' share against the program's {computing:.0f} s of computation: "
        f"{100 * (saving_cpu - plain_cpu) / computing:.1f}% (the most they can slow it down "
        "when it has no core to spare)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("kill", "delta", "both"), default="both")
    args = parser.parse_args()
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native")], check=True)
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        if args.part in ("kill", "both"):
            part_kill(Path(tmp))
        if args.part in ("delta", "both"):
            part_delta(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
