"""Running ``xwch-client`` in-process against the fake coordinator, on a ``Clock``."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from tests.fakes.coordinator_client_side import (
    CLIENT_TOKEN,
    COORDINATOR_URL,
    FakeCoordinator,
    in_memory_transfers,
)
from xwch.client.__main__ import run
from xwch.client.follow import JobFollower

# Polls a test may take before it decides the command hangs.
MAX_POLLS = 1000


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def environ(home: Path, **extra: str) -> dict[str, str]:
    return {
        "XWCH_COORDINATOR": COORDINATOR_URL,
        "XWCH_TOKEN": CLIENT_TOKEN,
        "XWCH_HOME": str(home),
        **extra,
    }


def run_cli(
    argv: list[str],
    fake: FakeCoordinator,
    home: Path,
    *,
    env: dict[str, str] | None = None,
    clock: Clock | None = None,
    isatty: bool = False,
    cwd: Path | None = None,
) -> Outcome:
    """Run one command line to its end, advancing the clock while it follows a job."""
    clock = clock or Clock()
    if clock.seconds() == 0:
        clock.advance(fake.now)
    stdout, stderr = io.StringIO(), io.StringIO()
    done = ensureDeferred(
        run(
            argv,
            clock,
            StubTreq(fake.resource()),
            stdout,
            stderr,
            environ=environ(home) if env is None else env,
            transfers=in_memory_transfers(fake),
            isatty=isatty,
            tz=UTC,
            cwd=cwd or home,
        )
    )
    for _ in range(MAX_POLLS):
        if done.called:
            break
        clock.advance(JobFollower.POLL_INTERVAL)
    results: list[int] = []
    done.addCallback(results.append)
    assert results, "the command did not finish"
    return Outcome(results[0], stdout.getvalue(), stderr.getvalue())


def write_job(directory: Path, name: str = "demo") -> Path:
    """A valid job file with a plain binary, a bundle binary and an input file."""
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "work.sh").write_text("#!/bin/sh\necho work\n")
    (directory / "data").mkdir()
    (directory / "data" / "in.txt").write_text("input data\n")
    (directory / "bundle").mkdir()
    (directory / "bundle" / "run.sh").write_text("#!/bin/sh\ncat parts/*/out.txt\n")
    (directory / "bundle" / "lib.txt").write_text("library\n")
    job = {
        "name": name,
        "binaries": {"work": "bin/work.sh", "pkg": {"bundle": "bundle/", "entry": "run.sh"}},
        "files": {"input": "data/in.txt"},
        "tasks": [
            {
                "id": "t-{i}",
                "foreach": {"i": {"range": [0, 2]}},
                "binary": "work",
                "inputs": {"in.txt": "input"},
                "outputs": ["out.txt"],
            },
            {
                "id": "merge",
                "binary": "pkg",
                "inputs": {"parts/": "t-*/out.txt"},
                "outputs": ["all.txt"],
                "cost": 2.5,
            },
        ],
    }
    path = directory / "dag.json"
    path.write_text(json.dumps(job))
    return path
