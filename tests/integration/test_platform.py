"""The whole platform as real processes on loopback, driven through ``xwch-client``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    NATIVE,
    ROOT,
    client,
    job_file,
    running_platform,
    wait_for,
)
from xwch.localprocess import LocalPlatformProcess

# Of the PNG merge writes (stored deflate blocks: the same bytes on every machine).
MANDELBROT_DIGEST = "41809ad80f777af153810843e6a60c3bf94bad985983118e741768bf619c2ced"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, native_build: Path
) -> Iterator[LocalPlatformProcess]:
    with running_platform(
        tmp_path_factory.mktemp("xwch-home"), workers=2, slots=2, warehouses=2
    ) as p:
        yield p


def test_mandelbrot_example_yields_the_expected_image(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    """The demo's job renders 16 tiles on the workers and merges them into the known image."""
    out = tmp_path / "results"
    done = client(
        platform, "submit", str(ROOT / "examples/mandelbrot/dag.json"), "--wait", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    image = out / "image" / "image.png"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == MANDELBROT_DIGEST
    status = json.loads(client(platform, "status", job_id, "--json").stdout)
    assert status["state"] == "done" and status["counts"]["done"] == 17
    tasks = json.loads(client(platform, "tasks", job_id, "--json").stdout)
    assert {t["state"] for t in tasks["tasks"]} == {"done"}


def test_diamond_passes_data_between_tasks(platform: LocalPlatformProcess, tmp_path: Path) -> None:
    """In a diamond DAG each task receives exactly the outputs of the tasks it reads."""
    out = tmp_path / "results"
    done = client(
        platform, "submit", str(ROOT / "examples/diamond/dag.json"), "--wait", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    results = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(results) == 1
    expected = (ROOT / "examples/diamond/expected-d.txt").read_bytes()
    assert (out / results[0]).read_bytes() == expected


def test_failing_task_fails_the_job_and_keeps_its_stderr(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    """A task that exits non-zero fails the job (exit 1) and its stderr is shown by `logs`."""
    path = job_file(
        tmp_path,
        {
            "name": "failing",
            "binaries": {"fail": str(NATIVE / "fail")},
            "tasks": [{"id": "boom", "binary": "fail", "args": ["5"], "retries": 1}],
        },
    )
    done = client(platform, "submit", str(path), "--wait", "-o", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    logs = client(platform, "logs", job_id, "boom")
    assert logs.returncode == 0, logs.stderr
    assert "xwch-fail: failing on purpose with status 5" in logs.stdout
    first = client(platform, "logs", job_id, "boom", "--attempt", "1")
    assert "failing on purpose" in first.stdout
    status = json.loads(client(platform, "status", job_id, "--json").stdout)
    assert status["state"] == "failed" and status["counts"]["failed"] == 1


def test_invalid_job_file_exits_2_and_creates_no_job(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    """An invalid job file is refused before anything is sent: exit 2, reason, no job."""
    before = json.loads(client(platform, "list", "--json").stdout)
    path = job_file(
        tmp_path,
        {
            "name": "bad",
            "binaries": {"p": str(NATIVE / "noop")},
            "tasks": [{"id": "a", "binary": "missing"}],
        },
    )
    done = client(platform, "submit", str(path))
    assert done.returncode == 2
    assert "dag.json" in done.stderr and "tasks[0].binary" in done.stderr
    assert done.stdout == ""
    after = json.loads(client(platform, "list", "--json").stdout)
    assert after == before


def test_workers_are_listed(platform: LocalPlatformProcess) -> None:
    """`workers` shows every worker of the platform with its slots."""
    listed = json.loads(client(platform, "workers", "--json").stdout)
    alive = [w for w in listed["workers"] if w["state"] == "alive"]
    assert len(alive) == 2 and all(w["slots"] == 2 for w in alive)


def test_worker_killed_mid_attempt_has_it_relaunched_elsewhere(
    tmp_path: Path, native_build: Path
) -> None:
    """A worker killed with SIGKILL mid-attempt: the attempt runs again elsewhere, the job succeeds."""
    home = tmp_path / "home"
    # Not restarted by xwch-local: a victim back under its old name could take the relaunch.
    with running_platform(
        home, workers=2, slots=1, warehouses=1, extra=["--no-restart"]
    ) as platform:
        path = job_file(
            tmp_path,
            {
                "name": "survivor",
                "binaries": {"spin": str(NATIVE / "spin")},
                "tasks": [
                    {
                        "id": "long",
                        "binary": "spin",
                        "args": ["--sleep", "3", "out.txt"],
                        "outputs": ["out.txt"],
                    }
                ],
            },
        )
        submitted = client(platform, "submit", str(path))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        def running_worker() -> str | None:
            tasks = json.loads(client(platform, "tasks", job_id, "--json").stdout)["tasks"]
            # Given to a worker: "assigned" until its next Work Alive says the attempt started
            # (two seconds here), then "running"; a busy machine's client can miss the latter.
            started = tasks[0]["state"] in ("assigned", "running")
            return tasks[0]["worker"] if started else None

        victim_name = wait_for(running_worker, 60, "the task to start")
        victim = next(
            w
            for w in platform.state()["workers"]
            if victim_name.endswith(w["name"].replace("worker-", "-w"))
        )
        os.kill(victim["pid"], signal.SIGKILL)
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        tasks = json.loads(client(platform, "tasks", job_id, "--json").stdout)["tasks"]
        assert tasks[0]["state"] == "done" and tasks[0]["attempts"] == 2
        assert tasks[0]["worker"] != victim_name
