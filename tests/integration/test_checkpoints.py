"""Checkpoints survive the worker: real processes on loopback, the native ``steps`` program
(native/steps.c), which keeps its step in ``checkpoint/state`` and resumes from it; under a
quorum, each replica from its own checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.support import (
    NATIVE,
    api_get,
    client,
    client_json,
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


def replica_log(platform: LocalPlatformProcess, job_id: str, number: int) -> dict[str, Any] | None:
    """The record of attempt ``number`` of the task, once it exists."""
    log = api_get(platform, f"/jobs/{job_id}/tasks/long/logs?attempt={number}")
    return None if log is None else dict(log)


def logs_of(platform: LocalPlatformProcess, job_id: str, number: int) -> dict[str, Any]:
    log = replica_log(platform, job_id, number)
    assert log is not None, f"no attempt {number}"
    return log


def step_reached(platform: LocalPlatformProcess, worker: dict[str, Any]) -> int | None:
    """The step the program on ``worker`` (a local.json entry, one slot) has written to its
    checkpoint directory, read in the attempt's folder (left behind by a killed worker)."""
    for path in (platform.home / worker["name"]).rglob("ck/state"):
        found = re.fullmatch(r"step (\d+)\n", path.read_text())
        if found:
            return int(found.group(1))
    return None


def worker_state(platform: LocalPlatformProcess, name: str) -> str:
    rows = client_json(platform, "workers")["workers"]
    return str(next(r["state"] for r in rows if str(r["name"]).endswith(name)))


def checkpoint_recorded_after(platform: LocalPlatformProcess, job_id: str, count: int) -> None:
    """Wait until the task's last checkpoint time has changed ``count`` times."""
    seen = long_task(platform, job_id)["checkpointed"]
    for n in range(count):
        seen = wait_for(partial(newer_checkpoint, platform, job_id, seen), WAITING, f"save {n + 1}")


def newer_checkpoint(
    platform: LocalPlatformProcess, job_id: str, than: float | None
) -> float | None:
    latest = long_task(platform, job_id)["checkpointed"]
    return latest if latest != than else None


def kill_programs_of(platform: LocalPlatformProcess, worker: dict[str, Any]) -> None:
    """SIGKILL the task program left in ``worker``'s folder once the worker itself is killed:
    stopped by a suspension, it would stay stopped for ever."""
    folder = platform.home / worker["name"]
    for p in psutil.process_iter():
        try:
            if p.name() == "steps" and Path(p.cwd()).is_relative_to(folder):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


SAVED = re.compile(r"checkpoint ([0-9a-f]{12}) of attempt \S+ saved")


def saved_steps(platform: LocalPlatformProcess, worker: dict[str, Any], steps: int) -> set[int]:
    """The steps of the checkpoints ``worker``'s log says the coordinator recorded (those whose
    manifest a warehouse still holds)."""
    log = (platform.home / "logs" / f"{worker['name']}.log").read_text(errors="replace")
    prefixes = set(SAVED.findall(log))
    step_of = state_chunks(steps)
    found = set()
    for digest, manifest in stored_manifests(platform.home).items():
        if digest[:12] in prefixes:
            for f in manifest["files"]:
                if f["path"] == "state" and f["chunks"][0][0] in step_of:
                    found.add(step_of[f["chunks"][0][0]])
    return found


def test_a_killed_replica_resumes_from_its_own_checkpoints_and_the_quorum_is_reached(
    tmp_path: Path, native_build: Path
) -> None:
    """A task checked by a quorum of 2 runs as two replicas, each keeping checkpoints of its
    own. One replica's worker is suspended (it saves its step then, and nothing after) while
    the other runs well ahead; that worker is then killed with its program. Its replacement,
    on the third worker, resumes at the very step its own replica saved: not from scratch, and
    not from the other replica's later checkpoints. Both agree and the job succeeds."""
    steps = 100
    with running_platform(tmp_path / "home", workers=3, slots=1, warehouses=1) as platform:
        doc = steps_job(steps=steps)
        doc["tasks"][0]["quorum"] = 2
        job_id = submit(platform, tmp_path, doc)
        logs = wait_for(
            lambda: (
                (a := replica_log(platform, job_id, 1))
                and (b := replica_log(platform, job_id, 2))
                and (a, b)
            ),
            WAITING,
            "two replicas started",
        )
        victim, other = (worker_process(platform, str(log["worker"])) for log in logs)
        assert victim["name"] != other["name"]
        # Suspended early, so the other replica has a long way to run ahead: the victim's
        # worker stops the program and saves the step it reached, and nothing after.
        wait_for(lambda: (step_reached(platform, victim) or 0) >= 2, WAITING, "victim's steps")
        (platform.home / victim["name"] / "worker.toml").write_text(hours_away())
        wait_for(
            lambda: worker_state(platform, victim["name"].replace("worker-", "-w")) == "suspended",
            WAITING,
            "the victim's worker suspended",
        )
        frozen = wait_for(
            lambda: (
                (s := step_reached(platform, victim)) in saved_steps(platform, victim, steps) and s
            ),
            WAITING,
            "the victim's step saved",
        )
        # The other replica runs well ahead, with checkpoints recorded there.
        wait_for(
            lambda: (step_reached(platform, other) or 0) >= frozen + 10, WAITING, "steps ahead"
        )
        checkpoint_recorded_after(platform, job_id, 3)
        os.kill(victim["pid"], signal.SIGKILL)
        kill_programs_of(platform, victim)
        replacement = wait_for(
            lambda: replica_log(platform, job_id, 3), WAITING, "the killed replica replaced"
        )
        third = worker_process(platform, str(replacement["worker"]))
        assert third["name"] not in (victim["name"], other["name"])
        waited(platform, job_id)
        resumed_log = str(logs_of(platform, job_id, 3)["stdout"])
        resumed = RESUMED.search(resumed_log)
        # Its own replica's step: neither from scratch nor from the other replica, ahead.
        assert resumed is not None and int(resumed.group(1)) == frozen, (frozen, resumed_log)
        other_log = str(logs_of(platform, job_id, 2)["stdout"])
        assert "steps: started at step 0" in other_log and not RESUMED.search(other_log)
        task = long_task(platform, job_id)
        assert (task["state"], task["attempts"]) == ("done", 3), task
        got = client(platform, "results", job_id, "-o", str(tmp_path / "results"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "results" / "long" / "out.txt").read_text() == f"{steps} steps done\n"
        wait_for(lambda: not stored_manifests(platform.home), WAITING, "checkpoints dropped")
