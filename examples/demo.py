"""The demo: the whole platform on this machine renders the Mandelbrot example.

Run by ``make demo``: starts ``xwch-local`` (a coordinator, 2 warehouses, 2 workers of 2 slots)
in ``.xwch-demo/``, submits ``examples/mandelbrot/dag.json`` with ``xwch-client submit --wait``,
tells where the image is and how long it took, and stops every process it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
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
    finally:
        leaked = platform.stop()
        if leaked:
            print(f"warning: processes left behind: {leaked}", file=sys.stderr)
    elapsed = time.monotonic() - started
    image = results / "image" / "image.png"
    print(
        f"\nDone in {elapsed:.1f} s. The image is {image.relative_to(Path.cwd()) if image.is_relative_to(Path.cwd()) else image}"
    )
    return 0 if image.exists() else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
