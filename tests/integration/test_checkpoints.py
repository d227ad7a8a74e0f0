"""Checkpoints survive the worker: real processes on loopback, the native ``steps`` program
(native/steps.c), which keeps its step in ``checkpoint/state`` and resumes from it.

Not covered here: checkpoints under a quorum (replicated attempts), which this branch has not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    NATIVE,
    client,
    hours_away,
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


def test_a_task_resumes_from_its_checkpoint_after_its_worker_is_killed_and_drops_it_when_done(
    tmp_path: Path, native_build: Path
) -> None:
    """SIGKILL the worker running a checkpointing task: the relaunched attempt starts at the
    step last saved, not at step 0, and the task ends with the right output; then its
    checkpoints leave the warehouse."""
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
        # The task is done: its checkpoints are dropped from the warehouse.
        wait_for(lambda: not stored_manifests(platform.home), WAITING, "checkpoints dropped")


def state_chunks(steps: int) -> dict[str, int]:
    """The digest of ``ck/state`` at each step (the file is one chunk): digest -> step."""
    return {hashlib.sha256(f"step {k}\n".encode()).hexdigest(): k for k in range(steps + 1)}


def stored_manifests(home: Path) -> dict[str, dict[str, Any]]:
    """The checkpoint manifests the platform's warehouses hold: digest -> manifest."""
    found = {}
    for path in home.glob("warehouse-*/objects/??/*"):
        head = path.read_bytes()[:9]
        if head == b'{"dirs":[':
            found[path.name] = json.loads(path.read_bytes())
    return found


def test_a_corrupt_checkpoint_is_passed_over_for_the_one_before(
    tmp_path: Path, native_build: Path
) -> None:
    """The latest checkpoint's bytes are damaged at the warehouse: the relaunched attempt
    says so in its log, restores the checkpoint before it, and the task still ends right."""
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        job_id = submit(platform, tmp_path, steps_job())
        running = checkpointed_twice(platform, job_id)
        worker = worker_process(platform, running["worker"])
        # Frozen, the worker saves no newer checkpoint while the latest is damaged.
        os.kill(worker["pid"], signal.SIGSTOP)
        try:
            steps_of = state_chunks(30)
            by_step = {}
            for manifest in stored_manifests(platform.home).values():
                (state,) = [f for f in manifest["files"] if f["path"] == "state"]
                digest = state["chunks"][0][0]
                by_step[steps_of[digest]] = digest
            latest = max(by_step)
            for path in platform.home.glob(f"warehouse-*/objects/??/{by_step[latest]}"):
                path.write_bytes(path.read_bytes().replace(b"step", b"xtep"))
        finally:
            os.kill(worker["pid"], signal.SIGKILL)
        waited(platform, job_id)
        log = last_log(platform, job_id)
        assert "cannot be restored" in log, log
        assert "resumed from the checkpoint before it" in log, log
        resumed = RESUMED.search(log)
        assert resumed is not None and 0 < int(resumed.group(1)) < latest, log


def test_a_checkpoint_over_the_workers_limit_is_not_saved_and_the_log_says_so(
    tmp_path: Path, native_build: Path
) -> None:
    """A worker run with --max-checkpoint 64K meets a 1 MiB checkpoint: it saves none and the
    task's log warns of it; the task itself runs to its end."""
    with running_platform(
        tmp_path / "home", workers=1, slots=1, warehouses=1, extra=("--max-checkpoint", "64K")
    ) as platform:
        doc = steps_job(steps=8, every=0.5, extra=("--state-mib", "1"))
        job_id = submit(platform, tmp_path, doc)
        waited(platform, job_id)
        log = last_log(platform, job_id)
        assert "the checkpoint is not saved" in log and "--max-checkpoint" in log, log
        assert long_task(platform, job_id)["checkpointed"] is None


def test_a_task_given_back_after_a_long_suspension_resumes_elsewhere(
    tmp_path: Path, native_build: Path
) -> None:
    """The volunteer of the worker running the task comes back (its hours end): the worker
    stops the program and saves its checkpoint; suspended past its limit it gives the attempt
    back, and the other worker resumes it from there."""
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        job_id = submit(platform, tmp_path, steps_job(steps=40))
        running = checkpointed_twice(platform, job_id)
        worker = worker_process(platform, running["worker"])
        number = worker["name"].rsplit("-", 1)[1]
        preferences = platform.home / f"worker-{number}" / "worker.toml"
        preferences.write_text(hours_away() + "suspend_limit_minutes = 1\n")
        waited(platform, job_id)
        task = long_task(platform, job_id)
        assert task["attempts"] == 2, task
        assert task["worker"] != running["worker"]
        resumed = RESUMED.search(last_log(platform, job_id))
        assert resumed is not None and int(resumed.group(1)) > 0
