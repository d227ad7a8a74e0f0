"""Any process may crash at any moment and no work is lost: real processes on loopback."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    NATIVE,
    ROOT,
    api_get,
    client,
    client_json,
    job_file,
    running_platform,
    script,
    tasks_of,
    wait_for,
)
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration

WORDCOUNT_DIGEST = "2c43fedaa4e2884b02bd78b9c0177def65dd40a6f32073be33a8116b2eed5f8c"
SHARDS = ROOT / "examples" / "wordcount" / "shards"


def slow_wordcount(folder: Path, seconds: float) -> dict[str, Any]:
    """The word-count example with map tasks that take ``seconds`` each."""
    slow_map = script(folder, "slow-map.sh", f'sleep {seconds}\nexec {NATIVE / "wc-map"} "$@"\n')
    return {
        "name": "slow-wordcount",
        "binaries": {"map": str(slow_map), "reduce": str(NATIVE / "wc-reduce")},
        "files": {f"shard-{i}": str(SHARDS / f"shard-{i}.txt") for i in range(8)},
        "tasks": [
            {
                "id": "map-{i}",
                "foreach": {"i": {"range": [0, 8]}},
                "binary": "map",
                "args": ["shard.txt", "counts.tsv"],
                "inputs": {"shard.txt": "shard-{i}"},
                "outputs": ["counts.tsv"],
            },
            {
                "id": "reduce",
                "binary": "reduce",
                "args": ["counts", "total.tsv"],
                "inputs": {"counts/": "map-*/counts.tsv"},
                "outputs": ["total.tsv"],
            },
        ],
        "results": ["reduce/total.tsv"],
    }


def submit(platform: LocalPlatformProcess, path: Path) -> str:
    done = client(platform, "submit", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_coordinator_killed_mid_job_resumes_without_redoing_work(
    tmp_path: Path, native_build: Path
) -> None:
    """SIGKILL the coordinator mid-job: restarted on its store, it finishes the job, every
    output right, and tasks finished before the crash are not run again."""
    with running_platform(tmp_path / "home", workers=2, slots=2, warehouses=1) as platform:
        job_id = submit(platform, job_file(tmp_path, slow_wordcount(tmp_path, 1.0)))

        def some_done() -> list[str]:
            return [t for t, row in tasks_of(platform, job_id).items() if row["state"] == "done"]

        done_before = wait_for(some_done, 120, "a first task to finish")
        os.kill(platform.state()["coordinator"]["pid"], signal.SIGKILL)
        wait_for(lambda: platform.state()["coordinator"]["restarts"] == 1, 60, "the restart")
        wait_for(lambda: api_get(platform, f"/jobs/{job_id}"), 60, "the coordinator to answer")
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        tasks = tasks_of(platform, job_id)
        assert all(tasks[t]["attempts"] == 1 for t in done_before)
        out = tmp_path / "out"
        assert client(platform, "results", job_id, "-o", str(out)).returncode == 0
        assert digest_of(out / "reduce" / "total.tsv") == WORDCOUNT_DIGEST


def test_warehouse_killed_with_an_intermediate_output_loses_nothing(
    tmp_path: Path, native_build: Path
) -> None:
    """SIGKILL a warehouse holding an intermediate output and wipe its disk: the job still
    finishes right, and the lost copies are made again elsewhere."""
    # Bigger than INLINE_MOST: the intermediate output is stored at warehouses, not inline.
    left_file, right_file = tmp_path / "left.txt", tmp_path / "right.txt"
    left_file.write_bytes(b"left\n" * 500)
    right_file.write_bytes(b"right\n" * 500)
    with running_platform(tmp_path / "home", workers=1, slots=1, warehouses=2) as platform:
        slow_cat = script(tmp_path, "slow-cat.sh", 'sleep "$1"\ncat "$2" > "$3"\n')
        doc = {
            "name": "intermediate",
            "binaries": {"cat2": str(NATIVE / "cat2"), "slow": str(slow_cat)},
            "files": {"left": str(left_file), "right": str(right_file)},
            "tasks": [
                {
                    "id": "a",
                    "binary": "cat2",
                    "args": ["l", "r", "a.txt"],
                    "inputs": {"l": "left", "r": "right"},
                    "outputs": ["a.txt"],
                },
                {
                    "id": "b",
                    "binary": "slow",
                    "args": ["3", "a.txt", "b.txt"],
                    "inputs": {"a.txt": "a/a.txt"},
                    "outputs": ["b.txt"],
                },
                {"id": "c", "binary": "slow", "args": ["0", "b.txt", "c.txt"],
                 "inputs": {"b.txt": "b/b.txt"}, "outputs": ["c.txt"]},
            ],
            "results": ["a/a.txt", "c/c.txt"],
        }  # fmt: skip
        job_id = submit(platform, job_file(tmp_path, doc))

        def intermediate() -> str | None:
            results = api_get(platform, f"/jobs/{job_id}/results") or {"results": []}
            found = [r["digest"] for r in results["results"] if r["task"] == "a"]
            return found[0] if found else None

        digest = wait_for(intermediate, 120, "task a's output")

        def holders() -> list[str]:
            located = api_get(platform, f"/objects/{digest}") or {"warehouses": []}
            return [w["url"] for w in located["warehouses"]]

        wait_for(lambda: len(holders()) == 2, 60, "a second copy of the intermediate output")
        victim = platform.state()["warehouses"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        shutil.rmtree(platform.home / victim["name"] / "objects")
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        out = tmp_path / "out"
        assert client(platform, "results", job_id, "-o", str(out)).returncode == 0
        assert (
            out / "c" / "c.txt"
        ).read_bytes() == left_file.read_bytes() + right_file.read_bytes()
        # The restarted, empty warehouse told the catalog so, and got its copy back.
        wait_for(lambda: victim["url"] in holders() and len(holders()) == 2, 60, "re-replication")


def test_late_result_after_relaunch_is_recorded_once(tmp_path: Path, native_build: Path) -> None:
    """A worker frozen past the timeout is presumed lost and its task relaunched; when it
    thaws, the task's result is recorded exactly once."""
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        doc = {
            "name": "late",
            "binaries": {"spin": str(NATIVE / "spin")},
            "tasks": [{"id": "slow", "binary": "spin", "args": ["--sleep", "4", "out.txt"],
                       "outputs": ["out.txt"]}],
        }  # fmt: skip
        job_id = submit(platform, job_file(tmp_path, doc))

        def running_on() -> str | None:
            row = tasks_of(platform, job_id)["slow"]
            # "assigned" until the worker's next Work Alive, then "running" (see test_platform).
            return row["worker"] if row["state"] in ("assigned", "running") else None

        first = wait_for(running_on, 60, "the task to start")
        frozen = next(
            w
            for w in platform.state()["workers"]
            if first.endswith(w["name"].replace("worker-", "-w"))
        )
        os.kill(frozen["pid"], signal.SIGSTOP)
        try:
            wait_for(
                lambda: tasks_of(platform, job_id)["slow"]["attempts"] == 2, 60, "the relaunch"
            )
        finally:
            os.kill(frozen["pid"], signal.SIGCONT)
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        states = [
            client(platform, "logs", job_id, "slow", "--attempt", str(n)).stdout.splitlines()[0]
            for n in (1, 2)
        ]
        assert sum(1 for s in states if ": succeeded" in s) == 1, states
        summary = client_json(platform, "status", job_id)
        assert summary["counts"]["done"] == 1


def test_a_worker_killed_and_started_again_hands_its_task_on_at_once(
    tmp_path: Path, native_build: Path
) -> None:
    """SIGKILL the only worker mid-task; xwch-local starts it again: its new registration
    names the old one, whose task runs again at once. Work Alive every 60 s would otherwise
    keep the dead registration's task waiting three minutes, past this test's deadline."""
    extra = ["--alive-interval", "60"]
    with running_platform(
        tmp_path / "home", workers=1, slots=1, warehouses=1, extra=extra
    ) as platform:
        doc = {
            "name": "restarted",
            "binaries": {"spin": str(NATIVE / "spin")},
            "tasks": [{"id": "slow", "binary": "spin", "args": ["--sleep", "3", "out.txt"],
                       "outputs": ["out.txt"]}],
        }  # fmt: skip
        job_id = submit(platform, job_file(tmp_path, doc))
        wait_for(
            lambda: tasks_of(platform, job_id)["slow"]["state"] in ("assigned", "running"),
            60,
            "the task to start",
        )
        [worker] = platform.state()["workers"]
        os.kill(worker["pid"], signal.SIGKILL)
        wait_for(lambda: tasks_of(platform, job_id)["slow"]["state"] == "done", 60, "the rerun")
        assert tasks_of(platform, job_id)["slow"]["attempts"] == 2
        listed = client_json(platform, "workers", "--all")
        states = sorted(w["state"] for w in listed["workers"])
        assert states == ["alive", "lost"], listed


def test_poison_task_fails_for_good_and_retry_reruns_what_failed(
    tmp_path: Path, native_build: Path
) -> None:
    """A task failing on every worker fails the job with its logs; once the cause is fixed,
    `retry` runs only what failed and the job completes."""
    with running_platform(tmp_path / "home", workers=3, slots=1, warehouses=1) as platform:
        marker = tmp_path / "fixed"
        picky = script(
            tmp_path,
            "picky.sh",
            f'[ -e {marker} ] || {{ echo "not fixed yet" >&2; exit 4; }}\necho ok > out.txt\n',
        )
        doc = {
            "name": "poison",
            "binaries": {"picky": str(picky), "noop": str(NATIVE / "noop")},
            "tasks": [
                {"id": "fine", "binary": "noop", "args": ["fine.txt"], "outputs": ["fine.txt"]},
                {"id": "picky", "binary": "picky", "outputs": ["out.txt"], "retries": 10,
                 "after": ["fine"]},
            ],
        }  # fmt: skip
        job_id = submit(platform, job_file(tmp_path, doc))
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 1
        summary = client_json(platform, "status", job_id)
        assert "failed on 3 different workers" in summary["message"]
        assert tasks_of(platform, job_id)["picky"]["attempts"] == 3
        assert "not fixed yet" in client(platform, "logs", job_id, "picky").stdout
        marker.write_text("yes")
        retried = client(platform, "retry", job_id, "--wait")
        assert retried.returncode == 0, retried.stderr
        tasks = tasks_of(platform, job_id)
        assert tasks["fine"]["attempts"] == 1 and tasks["picky"]["state"] == "done"
