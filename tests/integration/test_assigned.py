"""A task a worker holds ahead of a free slot is `assigned`, not `running`, until it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.support import client, job_file, running_platform, script, wait_for

pytestmark = pytest.mark.integration


def test_tasks_held_ahead_are_assigned_until_they_start(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # A gated task waits for the test to open the gate: no sleep stands in for anything.
    program = script(
        tmp_path,
        "gated.sh",
        f'if [ "$3" = gated ]; then while [ ! -e "{gate}" ]; do sleep 0.05; done; fi\n'
        'echo "$1" > "$2"\n',
    )

    def job(name: str, count: int, kind: str) -> Path:
        return job_file(
            tmp_path,
            {
                "name": name,
                "binaries": {"gated": str(program)},
                "tasks": [
                    {
                        "id": "t-{i}",
                        "foreach": {"i": {"range": [0, count]}},
                        "binary": "gated",
                        "args": ["{i}", "out.txt", kind],
                        "outputs": ["out.txt"],
                    }
                ],
            },
            name=f"{name}.json",
        )

    with running_platform(tmp_path / "home", workers=1, slots=1, warehouses=1) as platform:
        # A worker holds work ahead only once its attempts are seen to be short.
        warm = client(platform, "submit", str(job("warm", 8, "quick")), "--wait")
        assert warm.returncode == 0, warm.stderr
        submitted = client(platform, "submit", str(job("gated", 4, "gated")))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        def states() -> dict[str, dict[str, object]]:
            listed = client(platform, "tasks", job_id, "--json")
            return {t["id"]: t for t in json.loads(listed.stdout)["tasks"]}

        def one_running_one_held() -> dict[str, dict[str, object]] | None:
            now = states()
            seen = sorted(str(t["state"]) for t in now.values())
            return now if seen.count("running") == 1 and "assigned" in seen else None

        now = wait_for(one_running_one_held, 120, "a task running and one held ahead")
        for task in now.values():
            if task["state"] == "assigned":
                assert task["started"] is None and task["worker"]
            if task["state"] == "running":
                assert task["started"] is not None
        gate.touch()
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        assert {str(t["state"]) for t in states().values()} == {"done"}
