"""Tasks per second for N trivial native tasks on xwch-local (default: 1,000 on 2 workers of 2 slots).

    .venv/bin/python bench/throughput.py [--tasks 1000] [--workers 2] [--slots 2]

Starts a fresh platform in a temporary XWCH_HOME, submits one job of N ``noop`` tasks (each
writes a small output, stored at a warehouse like any real output) with ``xwch-client submit
--wait``, and times it from the submission to the job's end (the command's exit). Prints the
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent
NOOP = ROOT / "native/build/noop"


@dataclass(frozen=True)
class JobTiming:
    """One job of N ``noop`` tasks on a fresh xwch-local, timed."""

    state: str
    done: int
    wait_exit: int
    # From the submission to the job's acceptance, and to its end.
    submit: float
    total: float


def noop_job(tasks: int) -> dict[str, object]:
    """A job of ``tasks`` ``noop`` tasks, each writing its index to its one output."""
    return {
        "name": "throughput",
        "binaries": {"noop": str(NOOP)},
        "tasks": [
            {
                "id": "t-{i}",
                "foreach": {"i": {"range": [0, tasks]}},
                "binary": "noop",
                "args": ["out.txt", "{i}\n"],
                "outputs": ["out.txt"],
                "retries": 0,
            }
        ],
        "results": [],
    }


def build_native() -> None:
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native")], check=True)


def compile_bytecode() -> None:
    """Cache the bytecode of our packages, as pip does for an installed package (and did for
    Dask's): an editable install caches it on first import, unless PYTHONDONTWRITEBYTECODE is
    set (it is on some machines), and then every ``xwch-client`` compiles some 120 modules,
    about 70 ms, inside the timed window."""
    packages = [str(ROOT / name) for name in ("xwch", "worker", "client", "warehouse")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True)


def time_xwch(tasks: int, workers: int, slots: int, extra: Sequence[str] = ()) -> JobTiming:
    """Start xwch-local (given ``extra`` flags) in a temporary XWCH_HOME, run one ``noop``
    job, stop it."""
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        (folder / "dag.json").write_text(json.dumps(noop_job(tasks)))
        platform = LocalPlatformProcess(
            folder / "home", workers=workers, slots=slots, warehouses=1, extra=extra
        )
        platform.start()
        try:
            # One command, as a user runs a job: `submit --wait` prints the job's id once it is
            # accepted, then follows it and returns when it has ended.
            started = time.monotonic()
            submitting = subprocess.Popen(
                [sys.executable, "-m", "xwch.client", "submit", "--wait", str(folder / "dag.json")],
                env=platform.env(),
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert submitting.stdout is not None
            job_id = submitting.stdout.readline().strip()
            accepted = time.monotonic()
            submitting.stdout.read()
            wait_exit = submitting.wait()
            ended = time.monotonic()
            if not job_id:
                raise RuntimeError(f"xwch-client submit --wait exited {wait_exit} with no job id")
            status = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "xwch.client", "status", job_id, "--json"],
                    env=platform.env(),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        finally:
            platform.stop()
    return JobTiming(
        state=status["state"],
        done=status["counts"]["done"],
        wait_exit=wait_exit,
        submit=accepted - started,
        total=ended - started,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    build_native()
    compile_bytecode()
    timing = time_xwch(args.tasks, args.workers, args.slots)
    run = timing.total - timing.submit
    print(f"tasks:            {args.tasks} on {args.workers} workers x {args.slots} slots")
    print(f"job state:        {timing.state} ({timing.done} done)  wait exit {timing.wait_exit}")
    print(f"submit:           {timing.submit:.2f} s (validate, upload, create)")
    print(f"run:              {run:.2f} s")
    print(
        f"throughput:       {args.tasks / timing.total:.1f} tasks/s end to end, {args.tasks / run:.1f} tasks/s while running"
    )
    return 0 if timing.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
