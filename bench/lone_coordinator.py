"""A coordinator alone (no warehouse, no worker), for the benchmarks that play its workers and
browsers themselves (bench/admission.py, bench/dashboard.py)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path


def token(data: Path, role: str) -> str:
    """A new token of ``role`` in the store under ``data``, made as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "xwch.coordinator", "token", "create", "--role", role,
         "--data", str(data)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def start_coordinator(data: Path) -> tuple[subprocess.Popen[str], str]:
    """The coordinator's process, listening on a free loopback port, and its URL."""

    def more_files() -> None:
        # Thousands of simulated callers, each with a connection of its own.
        resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))

    popen = subprocess.Popen(
        [sys.executable, "-m", "xwch.coordinator", "--data", str(data),
         "--listen", "tcp:0:interface=127.0.0.1:backlog=4096", "--log-level", "error"],
        stdout=subprocess.PIPE, text=True, preexec_fn=more_files,
    )  # fmt: skip
    assert popen.stdout is not None
    for line in popen.stdout:
        if "listening on" in line:
            return popen, line.split("listening on", 1)[1].strip()
    raise RuntimeError("the coordinator did not start")
