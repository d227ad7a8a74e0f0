"""Checkpoints survive the worker: real processes on loopback, the native ``steps`` program
(native/steps.c), which keeps its step in ``checkpoint/state`` and resumes from it.

Not covered here: checkpoints under a quorum (replicated attempts), which this branch has not.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    NATIVE,
    client,
    job_file,
    running_platform,
    tasks_of,
    wait_for,
)
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration

# Generous: a loaded two-core machine runs five engineers' tests at once.
WAITING = 120.0
RESUMED = re.compile(r"steps: resumed at step (\d+)")


def steps_job(steps: int = 30, every: float = 1.0, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": "steps",
        "binaries": {"steps": str(NATIVE / "steps")},
        "tasks": [
            {
                "id": "long",
                "binary": "steps",
                "args": ["--steps", str(steps), "--sleep", "0.3", *extra, "ck", "out.txt"],
                "outputs": ["out.txt"],
                "checkpoint": "ck/",
                "checkpoint_every": every,
            }
        ],
    }


def submit(platform: LocalPlatformProcess, folder: Path, doc: dict[str, Any]) -> str:
    done = client(platform, "submit", str(job_file(folder, doc)))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def long_task(platform: LocalPlatformProcess, job_id: str) -> dict[str, Any]:
    return tasks_of(platform, job_id)["long"]


def worker_process(platform: LocalPlatformProcess, worker: str) -> dict[str, Any]:
    """The local.json entry of the worker whose id (or name) is ``worker``."""
    return next(
        w
        for w in platform.state()["workers"]
        if worker.endswith(w["name"].replace("worker-", "-w"))
    )


def checkpointed_twice(platform: LocalPlatformProcess, job_id: str) -> dict[str, Any]:
    """The running task once a second checkpoint of its attempt is recorded."""
    first = wait_for(
        lambda: (t := long_task(platform, job_id))["checkpointed"] is not None and t,
        WAITING,
        "a first checkpoint",
    )
    return wait_for(
        lambda: (t := long_task(platform, job_id))["checkpointed"] != first["checkpointed"] and t,
        WAITING,
        "a second checkpoint",
    )


def last_log(platform: LocalPlatformProcess, job_id: str) -> str:
    done = client(platform, "logs", job_id, "long")
    assert done.returncode == 0, done.stderr
    return done.stdout


def waited(platform: LocalPlatformProcess, job_id: str) -> None:
    done = client(platform, "wait", job_id)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_task_resumes_from_its_checkpoint_after_its_worker_is_killed(
    tmp_path: Path, native_build: Path
) -> None:
    """SIGKILL the worker running a checkpointing task: the relaunched attempt starts at the
    step last saved, not at step 0, and the task ends with the right output."""
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        job_id = submit(platform, tmp_path, steps_job())
        running = checkpointed_twice(platform, job_id)
        os.kill(worker_process(platform, running["worker"])["pid"], signal.SIGKILL)
        waited(platform, job_id)
        task = long_task(platform, job_id)
        assert task["attempts"] == 2
        resumed = RESUMED.search(last_log(platform, job_id))
        assert resumed is not None and int(resumed.group(1)) > 0
        got = client(platform, "results", job_id, "-o", str(tmp_path / "results"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "results" / "long" / "out.txt").read_text() == "30 steps done\n"
