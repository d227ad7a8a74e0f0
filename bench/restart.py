"""How soon a coordinator with a big job in its store serves again after a restart.

    .venv/bin/python bench/restart.py [--tasks 100000]

Submits one job of N tasks (no workers, so they all stay in the store), stops the platform,
then starts a coordinator alone on the same store and times it until it listens and until it
answers the job's status. Prints the figures (goal: serving within 10 s for 100,000 tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import psutil

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native")], check=True)
    with tempfile.TemporaryDirectory(prefix="xwch-bench-") as tmp:
        folder = Path(tmp)
        job = {
            "name": "restart",
            "binaries": {"noop": str(ROOT / "native/build/noop")},
            "tasks": [
                {"id": "t-{i}", "foreach": {"i": {"range": [0, args.tasks]}}, "binary": "noop",
                 "args": ["out.txt"], "outputs": ["out.txt"]},
                {"id": "all", "binary": "noop", "inputs": {"parts/": "t-*/out.txt"}},
            ],
        }  # fmt: skip
        (folder / "dag.json").write_text(json.dumps(job))
        home = folder / "home"
        platform = LocalPlatformProcess(home, workers=0, warehouses=1)
        platform.start()
        try:
            started = time.monotonic()
            submitted = subprocess.run(
                [sys.executable, "-m", "xwch.client", "submit", str(folder / "dag.json")],
                env=platform.env(), capture_output=True, text=True, check=True,
            )  # fmt: skip
            submit_seconds = time.monotonic() - started
            job_id = submitted.stdout.strip()
        finally:
            platform.stop()
        config = tomllib.loads((home / "client.toml").read_text())
        env = dict(os.environ, XWCH_HOME=str(home))
        started = time.monotonic()
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "xwch.coordinator", "--listen", "tcp:0:interface=127.0.0.1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert coordinator.stdout is not None
            line = coordinator.stdout.readline().strip()
            listening = time.monotonic() - started
            url = line.rsplit(" ", 1)[-1]
            request = urllib.request.Request(
                f"{url}/api/v1/jobs/{job_id}",
                headers={"Authorization": "Bearer " + config["token"]},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                status = json.loads(response.read())
            serving = time.monotonic() - started
            memory = psutil.Process(coordinator.pid).memory_info().rss
        finally:
            coordinator.terminate()
            coordinator.wait(30)
    print(f"tasks in the store:   {status['total']} ({status['counts']['ready']} ready)")
    print(f"submit (client):      {submit_seconds:.1f} s")
    print(f"restart to listening: {listening:.2f} s")
    print(f"restart to serving:   {serving:.2f} s (goal < 10 s)")
    print(f"coordinator memory:   {memory / 2**20:.0f} MiB resident after recovery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
