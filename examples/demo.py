"""The demo: the whole platform on this machine renders the Mandelbrot example.

Run by ``make demo``: starts ``xwch-local`` (a coordinator, 2 warehouses, 2 workers of 2 slots)
in ``.xwch-demo/``, submits ``examples/mandelbrot/dag.json`` with ``xwch-client submit --wait``,
tells where the image is and how long it took, and stops every process it started.

With ``--keep`` it first opens the coordinator's dashboard (``xwch-client dashboard``: the link
is printed, and opened in a browser where there is one), and keeps the platform running after
the job until Ctrl-C, for a look around.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent


def open_dashboard(platform: LocalPlatformProcess) -> None:
    link = subprocess.run(
        [sys.executable, "-m", "xwch.client", "dashboard"],
        env=platform.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    if link.returncode == 0:
        print(f"Dashboard (the link works once, within 5 minutes): {link.stdout.strip()}")


def wait_for_ctrl_c() -> None:
    print("The platform keeps running for the dashboard; Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


def main(keep: bool = False) -> int:
    home = ROOT / ".xwch-demo"
    shutil.rmtree(home, ignore_errors=True)
    results = ROOT / "mandelbrot-results"
    shutil.rmtree(results, ignore_errors=True)
    started = time.monotonic()
    platform = LocalPlatformProcess(home, workers=2, slots=2, warehouses=2)
    print("Starting the platform (coordinator, 2 warehouses, 2 workers)...", flush=True)
    try:
        url = platform.start()
        print(f"Coordinator at {url}; logs in {home / 'logs'}", flush=True)
        if keep:
            open_dashboard(platform)
        submit = subprocess.run(
            [
                sys.executable,
                "-m",
                "xwch.client",
                "submit",
                str(ROOT / "examples/mandelbrot/dag.json"),
                "--wait",
                "-o",
                str(results),
            ],
            env=platform.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        print(submit.stdout, end="")
        if submit.returncode != 0:
            print(f"The job did not succeed (exit status {submit.returncode}).", file=sys.stderr)
            return submit.returncode
        if keep:
            wait_for_ctrl_c()
    finally:
        leaked = platform.stop()
        if leaked:
            print(f"warning: processes left behind: {leaked}", file=sys.stderr)
    elapsed = time.monotonic() - started
    image = results / "image" / "image.png"
    print(
        f"\nDone in {elapsed:.1f} s. The image is {image.relative_to(Path.cwd()) if image.is_relative_to(Path.cwd()) else image}"
    )
    if not keep:
        print("To watch it run in the web dashboard: .venv/bin/python examples/demo.py --keep")
    return 0 if image.exists() else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The Mandelbrot demo on a local platform.")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="open the dashboard, and keep the platform running after the job until Ctrl-C",
    )
    os.chdir(ROOT)
    sys.exit(main(parser.parse_args().keep))
