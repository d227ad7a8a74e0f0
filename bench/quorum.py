"""What results checked by replication cost, and what adaptive replication catches.

    .venv/bin/python bench/quorum.py cost [--tasks 2000] [--rounds 2]
    .venv/bin/python bench/quorum.py adaptive [--tasks 2000] [--workers 5]

``cost``: W1 (N trivial ``noop`` tasks on 2 workers x 2 slots, see throughput.py) with a quorum
of 1 and with a quorum of 2, alternating in the same run (1, 2, 1, 2, ...), each on a fresh
xwch-local; prints each run's time from submission to the job's end and the ratio of the
medians.

``adaptive``: one job of N tasks with ``"quorum": "adaptive"`` on W workers of one slot, of
which one in five cheats: its program writes a wrong output one time in five. Prints how many
wrong outputs the job's results hold (downloaded with ``submit --wait``), the attempts per
task, and which workers ended distrusted. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent
NOOP = ROOT / "native/build/noop"

# worker-1 of every five cheats one time in five (a byte of /dev/urandom below 52 of 256).
CHEAT = """\
#!/bin/sh
case "$(pwd)" in
  */worker-1/*|*/worker-6/*|*/worker-11/*)
    roll=$(od -An -N1 -tu1 /dev/urandom)
    if [ "$roll" -lt 52 ]; then echo "wrong $1" > out.txt; exit 0; fi ;;
esac
echo "right $1" > out.txt
"""


def job(tasks: int, binary: Path, quorum: int | str, args: list[str]) -> dict[str, object]:
    return {
        "name": "quorum",
        "binaries": {"prog": str(binary)},
        "quorum": quorum,
        "tasks": [
            {
                "id": "t-{i}",
                "foreach": {"i": {"range": [0, tasks]}},
                "binary": "prog",
                "args": args,
                "outputs": ["out.txt"],
                "retries": 0,
            }
        ],
    }


def client(platform: LocalPlatformProcess, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "xwch.client", *args, "--json"],
        env=platform.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def run_job(
    doc: dict[str, object], workers: int, slots: int, results: Path | None = None
) -> tuple[float, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Start xwch-local, run ``doc`` with ``submit --wait``; its time, status, tasks, workers."""
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        (folder / "dag.json").write_text(json.dumps(doc))
        platform = LocalPlatformProcess(folder / "home", workers=workers, slots=slots, warehouses=1)
        platform.start()
        try:
            command = [sys.executable, "-m", "xwch.client", "submit", "--wait"]
            if results is not None:
                command += ["-o", str(results)]
            started = time.monotonic()
            done = subprocess.run(
                [*command, str(folder / "dag.json")],
                env=platform.env(),
                cwd=folder,
                capture_output=True,
                text=True,
            )
            seconds = time.monotonic() - started
            job_id = done.stdout.splitlines()[0].strip()
            status = client(platform, "status", job_id)
            tasks = client(platform, "tasks", job_id)["tasks"]
            listed = client(platform, "workers")["workers"]
        finally:
            platform.stop()
    return seconds, status, tasks, listed


def cost(tasks: int, rounds: int) -> None:
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native")], check=True)
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for quorum in (1, 2):
            seconds, status, rows, _ = run_job(
                job(tasks, NOOP, quorum, ["out.txt", "{i}\n"]), workers=2, slots=2
            )
            attempts = sum(t["attempts"] for t in rows)
            times[quorum].append(seconds)
            print(
                f"round {r + 1} quorum {quorum}: {seconds:6.2f} s  {status['state']}  "
                f"{attempts / tasks:.2f} attempts/task  {tasks / seconds:.0f} tasks/s"
            )
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median quorum 1:  {one:.2f} s")
    print(f"median quorum 2:  {two:.2f} s")
    print(f"quorum 2 / quorum 1: {two / one:.2f}x the time (goal <= 2.1x)")


def adaptive(tasks: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        program = Path(tmp) / "cheat.sh"
        program.write_text(CHEAT)
        program.chmod(0o755)
        results = Path(tmp) / "results"
        seconds, status, rows, listed = run_job(
            job(tasks, program, "adaptive", ["{i}"]), workers=workers, slots=1, results=results
        )
        wrong = sum(
            1
            for i in range(tasks)
            if (results / f"t-{i}" / "out.txt").read_text() != f"right {i}\n"
        )
    attempts = sum(t["attempts"] for t in rows)
    cheats = (workers + 4) // 5
    print(f"tasks:            {tasks} adaptive on {workers} workers x 1 slot ({cheats} cheating)")
    print(f"job:              {status['state']} in {seconds:.1f} s")
    print(f"wrong accepted:   {wrong} (goal 0)")
    print(f"attempts/task:    {attempts / tasks:.2f}")
    for w in sorted(listed, key=lambda w: w["name"]):
        print(f"  {w['name']:<20} {w['state']:<11} {w['tasks_done']} results taken")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    c = sub.add_parser("cost", help="quorum 2 against quorum 1 on W1")
    c.add_argument("--tasks", type=int, default=2000)
    c.add_argument("--rounds", type=int, default=2)
    a = sub.add_parser("adaptive", help="adaptive replication with a cheating worker")
    a.add_argument("--tasks", type=int, default=2000)
    a.add_argument("--workers", type=int, default=5)
    args = parser.parse_args()
    if args.which == "cost":
        cost(args.tasks, args.rounds)
    else:
        adaptive(args.tasks, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
