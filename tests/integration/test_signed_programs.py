"""Signed programs with real processes: a worker that trusts a key runs only what it signed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.support import (
    CLIENT_TIMEOUT,
    client,
    job_file,
    running_platform,
    script,
    tasks_of,
)
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration


def make_key(home: Path) -> str:
    """``xwch-client keys create`` in ``home``: the public key it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "xwch.client", "keys", "create"],
        env={"XWCH_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("ed25519:")
    return line


def client_without_key(
    platform: LocalPlatformProcess, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``xwch-client ARGS`` from another home, holding no signing key: it signs nothing."""
    home.mkdir(exist_ok=True)
    env = platform.env()
    (home / "client.toml").write_text((platform.home / "client.toml").read_text())
    env["XWCH_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "xwch.client", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )


def trusting(home: Path, worker: int, key: str) -> None:
    """worker.toml of xwch-local's worker ``worker``: it trusts ``key`` only."""
    folder = home / f"worker-{worker}"
    folder.mkdir(parents=True)
    (folder / "worker.toml").write_text(f'trusted_keys = ["{key}"]\n')


def job(tmp_path: Path, name: str, tasks: int) -> Path:
    program = script(tmp_path, f"{name}.sh", 'echo "$1" > out.txt\n')
    return job_file(
        tmp_path,
        {
            "name": name,
            "binaries": {"prog": str(program)},
            "tasks": [
                {"id": f"t{i}", "binary": "prog", "args": [str(i)], "outputs": ["out.txt"]}
                for i in range(tasks)
            ],
        },
        name=f"{name}.json",
    )


def test_unsigned_work_goes_to_the_worker_that_accepts_it(tmp_path: Path) -> None:
    """Worker 1 trusts the client's key, worker 2 trusts nothing: the unsigned job runs on
    worker 2 alone, the signed one runs, and every task is done."""
    home = tmp_path / "home"
    key = make_key(home)
    trusting(home, 1, key)
    with running_platform(home, workers=2, slots=2, warehouses=1) as platform:
        unsigned = client_without_key(
            platform,
            tmp_path / "plain",
            "submit",
            "--wait",
            str(job(tmp_path, "plain", 6)),
            "-o",
            str(tmp_path / "plain-results"),
        )
        assert unsigned.returncode == 0, unsigned.stderr
        job_id = unsigned.stdout.splitlines()[0]
        workers = {t["worker"] for t in tasks_of(platform, job_id).values()}
        assert all(w.endswith("-w2") for w in workers), workers
        signed = client(platform, "submit", "--wait", str(job(tmp_path, "signed", 6)), cwd=tmp_path)
        assert signed.returncode == 0, signed.stderr
        assert "signing the job's programs with " + key in signed.stderr
        rows = tasks_of(platform, signed.stdout.splitlines()[0]).values()
        assert {t["state"] for t in rows} == {"done"}


def test_work_no_live_worker_accepts_is_explained_then_runs_when_signed(tmp_path: Path) -> None:
    """With only a trusting worker, an unsigned job is said to be unrunnable and why; the
    same job signed with the trusted key runs."""
    home = tmp_path / "home"
    key = make_key(home)
    trusting(home, 1, key)
    with running_platform(home, workers=1, slots=1, warehouses=1) as platform:
        submitted = client_without_key(
            platform, tmp_path / "plain", "submit", str(job(tmp_path, "plain", 2))
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        status = client(platform, "status", job_id)
        assert "no live worker accepts an unsigned program" in status.stdout, status.stdout
        rows = tasks_of(platform, job_id).values()
        assert {t["why"] for t in rows} == {"no live worker accepts an unsigned program"}
        assert client(platform, "cancel", job_id).returncode == 0
        signed = client(platform, "submit", "--wait", str(job(tmp_path, "signed", 2)), cwd=tmp_path)
        assert signed.returncode == 0, signed.stderr
