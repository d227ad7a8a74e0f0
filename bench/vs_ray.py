"""W1 of issue 21: XWCH against Ray and Dask, N trivial native tasks, in one run, alternated.

    .venv/bin/pip install -e '.[bench]'      # Ray and Dask distributed, for benchmarks only
    .venv/bin/python bench/vs_ray.py [--tasks 2000] [--workers 2] [--slots 2] [--rounds 3]
                                     [--only xwch,ray,dask] [--baseline PYTHON]

Every task has the same body on the three platforms: the ``noop`` program (native/build) runs in
a folder of its own with a small input (its index, as an argument) and writes it to its output
file, which is read back to the submitter.

- XWCH: a fresh xwch-local of W workers of S slots (one warehouse) runs one job of N tasks,
  timed from ``xwch-client submit --wait`` to its exit (bench/throughput.py).
- Ray: a fresh local Ray of W x S CPUs on loopback runs N tasks, each running ``noop`` through
  ``subprocess`` in a temporary folder and returning the output file's bytes, timed from the
  first submission to the last result gathered.
- Dask: a fresh ``LocalCluster`` of W processes of S threads does the same (bench/vs_dask.py).

No platform's start-up is timed. Each round runs the three in a different order (the machine is
shared: alternating spreads its load evenly); the figures are medians of the rounds. For XWCH it
also prints the CPU per task of each of its processes over the timed window (psutil's
``cpu_times`` of the coordinator, the warehouse and the workers, of the workers' spawn servers,
and of what the workers or their servers reaped: the launchers and the programs; the client's
from ``getrusage``). With ``--baseline
PYTHON``, an interpreter of another checkout of XWCH (a virtual environment where it is installed),
that XWCH runs too, as a fourth platform "before", for before/after figures of one run. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from throughput import NOOP, build_native, compile_bytecode, noop_job
from vs_dask import noop_task, time_dask

from xwch.localprocess import LocalPlatformProcess

INSTALL_HINT = "install them with: .venv/bin/pip install -e '.[bench]'"
PLATFORMS = ("xwch", "ray", "dask")


@dataclass
class XwchRun:
    """One XWCH job of N tasks: its time, and each process's CPU seconds over it."""

    seconds: float
    done: int
    state: str
    cpu: dict[str, float] = field(default_factory=dict)


def _cpu_of(pid: int) -> tuple[float, float, float, float]:
    """CPU seconds of a running process: its own, its reaped children's, and those of its
    living children (a worker's spawn server) and of what they reaped."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    helpers = reaped = 0.0
    for child in process.children():
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        helpers += t.user + t.system
        reaped += t.children_user + t.children_system
    return (
        times.user + times.system,
        times.children_user + times.children_system,
        helpers,
        reaped,
    )


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_xwch(tasks: int, workers: int, slots: int, python: str = sys.executable) -> XwchRun:
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        (folder / "dag.json").write_text(json.dumps(noop_job(tasks)))
        platform = LocalPlatformProcess(folder / "home", workers=workers, slots=slots, warehouses=1)
        # Its processes import the XWCH installed for ``python``.
        platform.args[0] = python
        platform.start()
        try:
            state = platform.state()
            pids = {"coordinator": state["coordinator"]["pid"]}
            pids.update({w["name"]: w["pid"] for w in state["warehouses"]})
            pids.update({w["name"]: w["pid"] for w in state["workers"]})
            before = {name: _cpu_of(pid) for name, pid in pids.items()}
            client_before = _client_cpu()
            started = time.monotonic()
            submitted = subprocess.run(
                [python, "-m", "xwch.client", "submit", "--wait", str(folder / "dag.json")],
                env=platform.env(),
                cwd=folder,
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - started
            client = _client_cpu() - client_before
            after = {name: _cpu_of(pid) for name, pid in pids.items()}
            job_id = submitted.stdout.split("\n", 1)[0].strip()
            if not job_id:
                raise RuntimeError(f"xwch-client submit failed: {submitted.stderr[-2000:]}")
            status = json.loads(
                subprocess.run(
                    [python, "-m", "xwch.client", "status", job_id, "--json"],
                    env=platform.env(),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        finally:
            platform.stop()
    cpu = {"client": client}
    for name in pids:
        own, reaped, helpers, helped = (
            a - b for a, b in zip(after[name], before[name], strict=True)
        )
        kind = name.split("-")[0]
        cpu[kind] = cpu.get(kind, 0.0) + own
        if kind == "worker":
            # Launchers and programs are reaped by the worker, or by its spawn server.
            cpu["launcher+program"] = cpu.get("launcher+program", 0.0) + reaped + helped
            cpu["spawn server"] = cpu.get("spawn server", 0.0) + helpers
    return XwchRun(elapsed, status["counts"]["done"], status["state"], cpu)


def time_ray(tasks: int, workers: int, slots: int) -> tuple[float, int]:
    """Seconds from the first submission to all results gathered, and how many were right."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray's workers import the task's module (bench/vs_dask.py) by name.
    bench = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [bench, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    import ray

    with tempfile.TemporaryDirectory(prefix="xwch-bench-ray-") as root:
        ray.init(
            num_cpus=workers * slots,
            include_dashboard=False,
            # Loopback only, and nothing of its own printed among our figures.
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=False,
        )
        try:
            remote = ray.remote(num_cpus=1)(noop_task)
            started = time.monotonic()
            refs = [remote.remote(str(NOOP), i, root) for i in range(tasks)]
            results = ray.get(refs)
            elapsed = time.monotonic() - started
        finally:
            ray.shutdown()
    right = sum(1 for i, out in enumerate(results) if out == f"{i}\n".encode())
    return elapsed, right


def _summary(rates: list[float]) -> str:
    return f"median {statistics.median(rates):7.1f}  (range {min(rates):.1f} to {max(rates):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(PLATFORMS), help="platforms, comma-separated")
    parser.add_argument("--baseline", help="the Python of another XWCH, run as 'before'")
    args = parser.parse_args()
    chosen = [p for p in args.only.split(",") if p]
    unknown = sorted(set(chosen) - set(PLATFORMS))
    if unknown:
        parser.error(f"unknown platform(s) {', '.join(unknown)}: choose among {PLATFORMS}")
    if args.baseline is not None:
        chosen.append("before")
    for platform, module in (("ray", "ray"), ("dask", "distributed")):
        if platform in chosen:
            try:
                __import__(module)
            except ImportError:
                print(f"bench/vs_ray.py needs {module} for {platform}: {INSTALL_HINT}")
                return 2
    build_native()
    compile_bytecode()
    n = args.tasks
    print(
        f"W1: {n} noop tasks on {args.workers} workers x {args.slots} slots, {args.rounds} rounds"
    )
    rates: dict[str, list[float]] = {p: [] for p in chosen}
    cpus: dict[str, list[dict[str, float]]] = {"xwch": [], "before": []}
    runners: dict[str, Callable[[], str]] = {}
    # A checkout's processes started from here would import its modules from the current
    # folder first (python -m puts it on their path): run from a neutral one.
    os.chdir(tempfile.gettempdir())

    def xwch(name: str = "xwch", python: str = sys.executable) -> str:
        run = time_xwch(n, args.workers, args.slots, python)
        rates[name].append(n / run.seconds)
        cpus[name].append(run.cpu)
        return f"{run.done} done, {run.state}"

    def ray_() -> str:
        seconds, right = time_ray(n, args.workers, args.slots)
        rates["ray"].append(n / seconds)
        return f"{right} right"

    def dask() -> str:
        seconds, right = time_dask(n, args.workers, args.slots)
        rates["dask"].append(n / seconds)
        return f"{right} right"

    runners = {
        "xwch": xwch,
        "ray": ray_,
        "dask": dask,
        "before": lambda: xwch("before", args.baseline),
    }
    for round_number in range(args.rounds):
        # Each round starts with another platform.
        order = chosen[round_number % len(chosen) :] + chosen[: round_number % len(chosen)]
        for platform in order:
            note = runners[platform]()
            print(
                f"round {round_number + 1}: {platform:5s} {rates[platform][-1]:7.1f} tasks/s"
                f" ({note})",
                flush=True,
            )
    for platform in chosen:
        print(f"{platform:5s} tasks/s: {_summary(rates[platform])}")
    for xwch_name in ("xwch", "before"):
        if xwch_name not in chosen:
            continue
        for other, goal in (("ray", 1.2), ("dask", 1.0)):
            if other in chosen:
                ratio = statistics.median(rates[xwch_name]) / statistics.median(rates[other])
                print(f"{xwch_name} / {other}: {ratio:.3f} (ratio of medians; goal >= {goal})")
    print("XWCH CPU per task, ms (median of rounds):" + ("   this / before" * ("before" in chosen)))
    measured = [name for name in ("xwch", "before") if cpus[name]]
    if measured:
        for part in [*cpus[measured[0]][0], "all"]:
            medians = [
                statistics.median(
                    (sum(c.values()) if part == "all" else c[part]) / n * 1000 for c in cpus[name]
                )
                for name in measured
            ]
            print(f"  {part:17s} " + "  ".join(f"{m:6.3f}" for m in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
