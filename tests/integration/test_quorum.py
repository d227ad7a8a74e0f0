"""Results checked by replication on a real platform: a worker returning wrong outputs does
not make a job's results wrong, and results that never agree fail the task saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.support import api_get, client, job_file, running_platform, script

pytestmark = pytest.mark.integration

# Each worker of xwch-local works under $XWCH_HOME/worker-N: the program finds out where it
# runs from its working directory, and worker-1 returns a wrong output.
CHEATING_PROGRAM = """\
case "$(pwd)" in
  */worker-1/*) echo "wrong $1" > out.txt ;;
  *) echo "right $1" > out.txt ;;
esac
"""


# Enough tasks that worker-1 takes part in a few votes (it races two others for each replica).
TASKS = 20


def attempts_of(platform: object, job_id: str, task: str, count: int) -> list[dict[str, object]]:
    logs = []
    for number in range(1, count + 1):
        log = api_get(platform, f"/jobs/{job_id}/tasks/{task}/logs?attempt={number}")  # type: ignore[arg-type]
        if log is not None:
            logs.append(log)
    return logs


def test_a_cheating_worker_is_outvoted_then_distrusted_and_the_results_are_right(
    tmp_path: Path,
) -> None:
    program = script(tmp_path, "compute.sh", CHEATING_PROGRAM)
    job = job_file(
        tmp_path,
        {
            "name": "checked",
            "binaries": {"compute": str(program)},
            "quorum": 2,
            "tasks": [
                {
                    "id": "t-{i}",
                    "foreach": {"i": {"range": [0, TASKS]}},
                    "binary": "compute",
                    "args": ["{i}"],
                    "outputs": ["out.txt"],
                }
            ],
        },
    )
    out = tmp_path / "results"
    # Two warehouses: outputs, the wrong ones too, are copied between them as usual.
    with running_platform(tmp_path / "home", workers=3, slots=1, warehouses=2) as platform:
        done = client(platform, "submit", str(job), "--wait", "-o", str(out))
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.splitlines()[0].strip()
        for i in range(TASKS):
            assert (out / f"t-{i}" / "out.txt").read_text() == f"right {i}\n"
        tasks = json.loads(client(platform, "tasks", job_id, "--json").stdout)["tasks"]
        for row in tasks:
            for log in attempts_of(platform, job_id, row["id"], row["attempts"]):
                # Whatever worker-1 returned lost the vote; what the others returned won.
                if str(log["worker"]).endswith("-w1") and log["exit_code"] == 0:
                    assert log["state"] == "failed" and "outvoted" in str(log["error"]), log
                elif log["state"] == "succeeded":
                    assert not str(log["worker"]).endswith("-w1")
        # Three lost votes: worker-1 is distrusted, and shown so.
        workers = client(platform, "workers")
        assert workers.returncode == 0, workers.stderr
        [line] = [row for row in workers.stdout.splitlines() if "-w1 " in row]
        assert "distrusted" in line, workers.stdout


def test_results_that_never_agree_fail_the_task_with_a_message(tmp_path: Path) -> None:
    # Every worker works in its own folder: no two results are the same.
    program = script(tmp_path, "where.sh", "pwd > out.txt\n")
    job = job_file(
        tmp_path,
        {
            "name": "unsettled",
            "binaries": {"where": str(program)},
            "tasks": [
                {
                    "id": "t",
                    "binary": "where",
                    "outputs": ["out.txt"],
                    "quorum": 2,
                    "max_attempts": 2,
                }
            ],
        },
    )
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        done = client(platform, "submit", str(job), "--wait", "-o", str(tmp_path / "r"))
        assert done.returncode == 1, done.stderr
        job_id = done.stdout.splitlines()[0].strip()
        status = client(platform, "status", job_id)
        assert "no quorum: 2 results, 2 different" in status.stdout + status.stderr
        logs = client(platform, "logs", job_id, "t")
        assert logs.returncode == 0, logs.stderr
        assert "no quorum" in logs.stdout + logs.stderr
        workers = {str(log["worker"])[-3:] for log in attempts_of(platform, job_id, "t", 2)}
        assert workers == {"-w1", "-w2"}


def test_a_compare_program_lets_results_that_differ_harmlessly_agree(tmp_path: Path) -> None:
    # Each worker computes the same number to a slightly different last digit.
    program = script(
        tmp_path,
        "approx.sh",
        'case "$(pwd)" in */worker-1/*) echo 3.14159 ;; *) echo 3.14158 ;; esac > out.txt\n',
    )
    compare = script(
        tmp_path,
        "near.sh",
        'awk -v a="$(cat "$1/out.txt")" -v b="$(cat "$2/out.txt")" '
        "'BEGIN { d = a - b; if (d < 0) d = -d; exit (d < 0.001) ? 0 : 1 }'\n",
    )
    job = job_file(
        tmp_path,
        {
            "name": "approx",
            "binaries": {"approx": str(program), "near": str(compare)},
            "quorum": 2,
            "compare": "near",
            "tasks": [{"id": "pi", "binary": "approx", "outputs": ["out.txt"]}],
        },
    )
    out = tmp_path / "results"
    with running_platform(tmp_path / "home", workers=2, slots=1, warehouses=1) as platform:
        done = client(platform, "submit", str(job), "--wait", "-o", str(out))
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.splitlines()[0].strip()
        assert (out / "pi" / "out.txt").read_text() in ("3.14159\n", "3.14158\n")
        # Both results stand: the compare program found them to agree.
        logs = attempts_of(platform, job_id, "pi", 2)
        assert [log["state"] for log in logs] == ["succeeded", "succeeded"], logs
        assert {log["error"] for log in logs} == {None}
