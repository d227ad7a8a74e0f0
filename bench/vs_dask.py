"""XWCH against Dask distributed: N trivial native tasks on the same machine, in the same run.

    .venv/bin/pip install -e '.[bench]'      # Dask distributed, for this benchmark only
    .venv/bin/python bench/vs_dask.py [--tasks 2000] [--workers 2] [--slots 2] [--runs 1]

Each run times both, one after the other:

1. XWCH: a fresh xwch-local of W workers of S slots (one warehouse) runs one job of N ``noop``
   tasks (as bench/throughput.py), timed from the submission to the job's end;
2. Dask: a fresh ``LocalCluster`` of W worker processes of S threads runs N tasks, each running
   the same ``noop`` with the same arguments through ``subprocess`` in a temporary folder of its
   own and reading back its output file, timed from the submission to the last result gathered.

Neither platform's start-up is timed. XWCH does more for each task (a sandbox, the program's
digest checked, the output hashed and stored at a warehouse, the result in a durable store); this
is the price of that. Prints tasks per second for both and the ratio XWCH / Dask (the issue's goal
is 1.0 or more); asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import NOOP, build_native, compile_bytecode, time_xwch

INSTALL_HINT = "install it with: .venv/bin/pip install -e '.[bench]'"


def noop_task(program: str, index: int, root: str) -> bytes:
    """In a Dask worker: run ``noop`` in a folder of its own, return its output file's bytes."""
    with tempfile.TemporaryDirectory(dir=root) as folder:
        subprocess.run(
            [program, "out.txt", f"{index}\n"],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
        return (Path(folder) / "out.txt").read_bytes()


def time_dask(tasks: int, workers: int, slots: int) -> tuple[float, int]:
    """Seconds from submission to all results gathered, and how many results were right."""
    from distributed import Client, LocalCluster

    with (
        tempfile.TemporaryDirectory(prefix="xwch-bench-dask-") as root,
        LocalCluster(
            n_workers=workers,
            threads_per_worker=slots,
            processes=True,
            dashboard_address=None,
            local_directory=root,
            # Its workers' complaints at shutdown (heartbeats to a closed scheduler) are noise.
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        indexes = list(range(tasks))
        started = time.monotonic()
        futures = client.map(
            noop_task,
            [str(NOOP)] * tasks,
            indexes,
            [root] * tasks,
            pure=False,
        )
        results = client.gather(futures)
        elapsed = time.monotonic() - started
    right = sum(1 for i, out in zip(indexes, results, strict=True) if out == f"{i}\n".encode())
    return elapsed, right


def _summary(rates: list[float]) -> str:
    return f"median {statistics.median(rates):7.1f}  (range {min(rates):.1f} to {max(rates):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    try:
        import distributed  # noqa: F401
    except ImportError:
        print(f"bench/vs_dask.py needs Dask distributed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    build_native()
    compile_bytecode()
    print(
        f"{args.tasks} noop tasks on {args.workers} workers x {args.slots} slots, "
        f"{args.runs} run(s)"
    )
    xwch_rates: list[float] = []
    dask_rates: list[float] = []
    for run in range(1, args.runs + 1):
        timing = time_xwch(args.tasks, args.workers, args.slots)
        xwch_rates.append(args.tasks / timing.total)
        seconds, right = time_dask(args.tasks, args.workers, args.slots)
        dask_rates.append(args.tasks / seconds)
        print(
            f"run {run}: XWCH {xwch_rates[-1]:7.1f} tasks/s ({timing.done} done, {timing.state})"
            f"   Dask {dask_rates[-1]:7.1f} tasks/s ({right} right)"
            f"   ratio {xwch_rates[-1] / dask_rates[-1]:.3f}"
        )
    print(f"XWCH tasks/s:  {_summary(xwch_rates)}")
    print(f"Dask tasks/s:  {_summary(dask_rates)}")
    ratios = [x / d for x, d in zip(xwch_rates, dask_rates, strict=True)]
    print(
        f"XWCH / Dask:   {statistics.median(xwch_rates) / statistics.median(dask_rates):.3f} "
        f"(ratio of medians; per run {min(ratios):.3f} to {max(ratios):.3f}; goal >= 1.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
