"""A task no live worker can run says why, instead of staying `ready` with no hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.support import client, job_file, running_platform, script

pytestmark = pytest.mark.integration


def test_a_program_for_another_platform_is_explained(tmp_path: Path) -> None:
    program = script(tmp_path, "prog.sh", "exit 0\n")
    job = job_file(
        tmp_path,
        {
            "name": "elsewhere",
            "binaries": {"prog": {"linux-riscv64": str(program)}},
            "tasks": [{"id": "t", "binary": "prog", "args": []}],
        },
    )
    with running_platform(tmp_path / "home", workers=1, slots=1, warehouses=1) as platform:
        submitted = client(platform, "submit", str(job))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        status = client(platform, "status", job_id)
        assert status.returncode == 0, status.stderr
        assert "CANNOT RUN" in status.stdout
        assert "program 'prog' exists for linux-riscv64" in status.stdout
        tasks = client(platform, "tasks", job_id, "--json")
        [row] = json.loads(tasks.stdout)["tasks"]
        assert row["state"] == "ready" and "linux-riscv64" in row["why"]
        assert client(platform, "cancel", job_id).returncode == 0
