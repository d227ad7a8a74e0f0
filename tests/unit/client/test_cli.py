"""The xwch-client command line, run in-process against the fake coordinator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.coordinator_client_side import (
    CLIENT_TOKEN,
    COORDINATOR_URL,
    WORKER_TOKEN,
    FakeCoordinator,
    HttpError,
    Step,
)
from tests.unit.client.harness import environ, run_cli, write_job
from xwch.client.__main__ import EXIT_COORDINATOR, EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE
from xwch.protocol.cluster import CoordinatorInfo

DONE = Step("done", {"done": 3})
FAILED = Step("failed", {"done": 2, "failed": 1}, message="task merge failed")


@pytest.fixture
def fake() -> FakeCoordinator:
    return FakeCoordinator()


def test_submit_prints_the_job_id_alone_on_the_first_line(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`submit` prints the new job's id alone on the first line of standard output."""
    out = run_cli(["submit", str(write_job(tmp_path))], fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    assert out.stdout.splitlines() == ["job-1"]
    assert fake.jobs["job-1"].name == "demo"


def test_submit_an_invalid_file_sends_nothing_and_exits_2(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """An invalid job file is refused with a message naming the file and place; nothing is sent."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "binaries": {}, "tasks": [{"id": "a", "binary": "b"}]}))
    out = run_cli(["submit", str(bad)], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert str(bad) in out.stderr and "tasks[0].binary" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    assert fake.requests == []


def test_submit_an_invalid_file_exits_2_even_without_a_coordinator(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """The job file is checked before the coordinator is even looked for."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = run_cli(["submit", str(bad)], fake, tmp_path, env={"XWCH_HOME": str(tmp_path)})
    assert out.status == EXIT_USAGE
    assert "invalid JSON" in out.stderr


def test_submit_wait_follows_the_job_and_downloads_its_results(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`submit --wait` follows the job and leaves its results in ./<name>-results/<task>/<output>."""
    fake.next_script = [Step("running", {"ready": 3}), Step("running", {"done": 2}), DONE]
    fake.next_results = [("merge", "all.txt", b"all\n")]
    out = run_cli(["submit", "--wait", str(write_job(tmp_path / "src"))], fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "job-1"
    assert "job job-1 done: 3/3 tasks done" in lines
    assert (tmp_path / "demo-results" / "merge" / "all.txt").read_bytes() == b"all\n"
    assert str(tmp_path / "demo-results") in lines[-1]


def test_submit_wait_with_output_dir_puts_results_there(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`submit --wait -o DIR` downloads the results into DIR."""
    fake.next_script = [DONE]
    fake.next_results = [("t-0", "out.txt", b"partial\n")]
    job_file = write_job(tmp_path / "src")
    out = run_cli(["submit", str(job_file), "--wait", "-o", str(tmp_path / "got")], fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    assert (tmp_path / "got" / "t-0" / "out.txt").read_bytes() == b"partial\n"
    assert not (tmp_path / "demo-results").exists()


def test_submit_wait_exits_1_when_the_job_fails(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`submit --wait` exits 1 when the job fails, and names the failed tasks."""
    fake.next_script = [Step("running", {"ready": 3}), FAILED]
    fake.next_task_states = {"merge": "failed"}
    out = run_cli(["submit", "--wait", str(write_job(tmp_path / "src"))], fake, tmp_path)
    assert out.status == EXIT_JOB_FAILED
    assert out.stdout.splitlines()[0] == "job-1"
    assert "task merge failed" in out.stderr
    assert "failed tasks: merge" in out.stderr
    assert "xwch-client logs job-1 merge" in out.stderr


def test_submit_o_without_wait_is_a_usage_error(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`submit -o DIR` without --wait is refused: nothing would ever be downloaded there."""
    out = run_cli(["submit", str(write_job(tmp_path)), "-o", "x"], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert "--wait" in out.stderr
    assert fake.requests == []


@pytest.mark.parametrize(("final", "status"), [(DONE, 0), (FAILED, 1)])
def test_wait_exits_by_how_the_job_ended(
    fake: FakeCoordinator, tmp_path: Path, final: Step, status: int
) -> None:
    """`wait` exits 0 when the job is done and 1 when it failed."""
    fake.add_job(script=[Step("running", {"running": 1, "ready": 1}), final], total=3)
    out = run_cli(["wait", "job-1"], fake, tmp_path)
    assert out.status == status
    assert f"job job-1 {final.state}" in out.stdout


def test_wait_exits_1_when_the_job_is_cancelled(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`wait` exits 1 for a cancelled job."""
    fake.add_job(script=[Step("cancelled", {"cancelled": 2})])
    assert run_cli(["wait", "job-1"], fake, tmp_path).status == EXIT_JOB_FAILED


def test_wait_progress_goes_to_stderr_as_plain_lines_when_not_a_terminal(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """Without a terminal, `wait` writes a progress line only when the counts change."""
    same = Step("running", {"running": 2})
    fake.add_job(script=[same, same, same, Step("running", {"done": 1, "running": 1}), DONE])
    out = run_cli(["wait", "job-1"], fake, tmp_path)
    lines = out.stderr.splitlines()
    assert len(lines) == 3
    assert "0/2 done, running 2" in lines[0]
    assert "1/2 done, running 1" in lines[1]
    assert "\r" not in out.stderr


def test_wait_on_a_terminal_redraws_one_line(fake: FakeCoordinator, tmp_path: Path) -> None:
    """On a terminal, `wait` redraws one progress line with carriage returns and ends it."""
    fake.add_job(script=[Step("running", {"running": 2}), Step("done", {"done": 2})])
    out = run_cli(["wait", "job-1"], fake, tmp_path, isatty=True)
    assert out.stderr.count("\r") == 2
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1
    assert "2/2" in out.stderr


def test_unknown_job_exits_2_with_the_coordinators_message(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """A job id the coordinator does not know exits 2 with its message, no traceback."""
    for argv in (["status", "nope"], ["wait", "nope"], ["tasks", "nope"], ["cancel", "nope"]):
        out = run_cli(argv, fake, tmp_path)
        assert out.status == EXIT_USAGE, argv
        assert "no job nope" in out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize("token", ["wrong", WORKER_TOKEN])
def test_refused_credentials_exit_3(fake: FakeCoordinator, tmp_path: Path, token: str) -> None:
    """A token the coordinator refuses (unknown, or of another role) exits 3."""
    out = run_cli(["list", "--token", token], fake, tmp_path)
    assert out.status == EXIT_COORDINATOR
    assert "refused the credentials" in out.stderr


def test_no_coordinator_configured_exits_2(fake: FakeCoordinator, tmp_path: Path) -> None:
    """With no coordinator in flags, environment or client.toml, commands exit 2 and say how."""
    out = run_cli(["list"], fake, tmp_path, env={"XWCH_HOME": str(tmp_path)})
    assert out.status == EXIT_USAGE
    assert "--coordinator" in out.stderr and "client.toml" in out.stderr


def test_coordinator_from_client_toml(fake: FakeCoordinator, tmp_path: Path) -> None:
    """The coordinator and token written in $XWCH_HOME/client.toml are used without flags."""
    (tmp_path / "client.toml").write_text(
        f'coordinator = "{COORDINATOR_URL}"\ntoken = "{CLIENT_TOKEN}"\n'
    )
    out = run_cli(["list"], fake, tmp_path, env={"XWCH_HOME": str(tmp_path)})
    assert out.status == EXIT_OK, out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--token", CLIENT_TOKEN, "--coordinator", COORDINATOR_URL, "list"],
        ["list", "--token", CLIENT_TOKEN, "--coordinator", COORDINATOR_URL],
        ["--coordinator", COORDINATOR_URL, "list", "--token", CLIENT_TOKEN],
    ],
)
def test_global_flags_work_before_and_after_the_command(
    fake: FakeCoordinator, tmp_path: Path, argv: list[str]
) -> None:
    """--coordinator and --token may be given before or after the command."""
    out = run_cli(argv, fake, tmp_path, env={"XWCH_HOME": str(tmp_path)})
    assert out.status == EXIT_OK, out.stderr


def test_token_flag_beats_the_environment(fake: FakeCoordinator, tmp_path: Path) -> None:
    """--token overrides XWCH_TOKEN."""
    env = environ(tmp_path, XWCH_TOKEN="wrong")
    assert run_cli(["list"], fake, tmp_path, env=env).status == EXIT_COORDINATOR
    out = run_cli(["list", "--token", CLIENT_TOKEN], fake, tmp_path, env=env)
    assert out.status == EXIT_OK


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["status"], ["logs", "job-1"], ["logs", "j", "t", "--attempt", "x"]],
)
def test_usage_errors_exit_2(fake: FakeCoordinator, tmp_path: Path, argv: list[str]) -> None:
    """A command line argparse cannot make sense of exits 2 with the usage on stderr."""
    out = run_cli(argv, fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert "usage:" in out.stderr
    assert fake.requests == []


def test_help_exits_0_and_lists_every_command(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`--help` lists every command of docs/cli.md and the exit statuses."""
    out = run_cli(["--help"], fake, tmp_path)
    assert out.status == EXIT_OK
    for command in ("submit", "wait", "status", "tasks", "workers", "results", "logs", "cancel"):
        assert command in out.stdout
    assert "exit status" in out.stdout


def test_status_shows_state_and_counts(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`status` shows the job's state and its tasks counted by state."""
    fake.add_job(script=[Step("running", {"done": 1, "running": 1})])
    out = run_cli(["status", "job-1"], fake, tmp_path)
    assert out.status == EXIT_OK
    assert "STATE     running" in out.stdout
    assert "1/2 done" in out.stdout
    assert "running" in out.stdout and "blocked" in out.stdout


def test_status_of_a_running_job_says_why_no_worker_computes(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`status` of a running job tells when the workers are suspended, and why; not once the
    job has ended."""
    fake.workers = [_worker(state="suspended", reason="outside the allowed hours 22:00-07:00")]
    fake.add_job(script=[Step("running", {"ready": 2})])
    out = run_cli(["status", "job-1"], fake, tmp_path)
    assert "WORKERS   1/1 workers suspended: outside the allowed hours 22:00-07:00" in out.stdout
    fake.add_job(script=[DONE])
    out = run_cli(["status", "job-2"], fake, tmp_path)
    assert "WORKERS" not in out.stdout


def test_submit_wait_says_when_the_workers_are_suspended(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """The progress of `submit --wait` tells that the workers are suspended, and why."""
    fake.workers = [_worker(state="suspended", reason="the computer is in use")]
    fake.next_script = [Step("running", {"ready": 3}), DONE]
    out = run_cli(["submit", "--wait", str(write_job(tmp_path / "src"))], fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    assert "ready 3; 1/1 workers suspended: the computer is in use" in out.stderr


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["status", "job-1", "--json"], "counts"),
        (["tasks", "job-1", "--json"], "tasks"),
        (["workers", "--json"], "workers"),
        (["list", "--json"], "jobs"),
        (["logs", "job-1", "a", "--json"], "stdout"),
        (["cancel", "job-1", "--json"], "state"),
        (["wait", "job-1", "--json"], "counts"),
    ],
)
def test_json_outputs_parse_as_json(
    fake: FakeCoordinator, tmp_path: Path, argv: list[str], key: str
) -> None:
    """Every --json output is one JSON document."""
    job = fake.add_job(script=[DONE])
    job.logs[("a", 1)] = _log(1, "succeeded", "out\n")
    job.tasks = [
        {
            "id": "a",
            "state": "done",
            "cost": 1,
            "worker": "w",
            "attempts": 1,
            "started": 1.0,
            "ended": 2.0,
        }
    ]
    fake.workers = [_worker()]
    out = run_cli(argv, fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    assert key in out.json()


def test_tasks_table(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`tasks` prints one aligned row a task under a header."""
    job = fake.add_job()
    job.tasks = [
        {
            "id": "tile-0",
            "state": "done",
            "cost": 50,
            "worker": "alice",
            "attempts": 1,
            "started": fake.now - 65,
            "ended": fake.now - 5,
        },
        {
            "id": "image",
            "state": "blocked",
            "cost": 1,
            "worker": None,
            "attempts": 0,
            "started": None,
            "ended": None,
        },
    ]
    out = run_cli(["tasks", "job-1"], fake, tmp_path)
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "COST",
        "WORKER",
        "ATTEMPTS",
        "STARTED",
        "ENDED",
        "DURATION",
    ]
    assert lines[1].split() == [
        "tile-0",
        "done",
        "50",
        "alice",
        "1",
        "22:12:15",
        "22:13:15",
        "1m00s",
    ]
    assert lines[2].split() == ["image", "blocked", "1", "-", "0", "-", "-", "-"]


def test_workers_table(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`workers` shows each worker's id, site, busy and total slots, memory in GiB and when
    it was last heard."""
    fake.workers = [_worker(last_heard=fake.now - 3, busy=1, site="lab")]
    out = run_cli(["workers"], fake, tmp_path)
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "SITE",
        "STATE",
        "BUSY/SLOTS",
        "ADDRESS",
        "PLATFORM",
        "CORES",
        "MEMORY",
        "GiB",
        "DONE",
        "LAST",
        "HEARD",
    ]
    assert lines[1].split() == [
        "w-1",
        "alice",
        "lab",
        "alive",
        "1/4",
        "10.0.0.2",
        "linux-x86_64",
        "8",
        "16.0",
        "12",
        "3s",
        "ago",
    ]


def test_workers_shows_why_a_worker_is_suspended(fake: FakeCoordinator, tmp_path: Path) -> None:
    """A suspended worker's row ends with why its volunteer's preferences stop it."""
    fake.workers = [
        _worker(id="w-1", state="suspended", reason="the computer is in use (5 min idle required)"),
        _worker(id="w-2"),
    ]
    out = run_cli(["workers"], fake, tmp_path)
    header, first, second = out.stdout.splitlines()
    assert header.endswith("LAST HEARD  WHY")
    assert first.split()[3] == "suspended"
    assert first.endswith("ago  the computer is in use (5 min idle required)")
    assert second.endswith("ago")


def test_workers_leaves_out_the_lost_unless_all(fake: FakeCoordinator, tmp_path: Path) -> None:
    """Lost workers are left out (standard error says how many and how to see them); --all
    lists them too, each with its own id, in the coordinator's order."""
    fake.workers = [
        _worker(id="w-3"),
        _worker(id="w-2", state="lost", busy=None),
        _worker(id="w-1", state="lost", busy=None),
    ]
    out = run_cli(["workers"], fake, tmp_path)
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["w-3"]
    assert out.stderr == "2 lost worker(s) not shown; --all shows them\n"
    assert [w["id"] for w in run_cli(["workers", "--json"], fake, tmp_path).json()["workers"]] == [
        "w-3"
    ]
    out = run_cli(["workers", "--all"], fake, tmp_path)
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(r[0], r[3], r[4]) for r in rows] == [
        ("w-3", "alive", "0/4"),
        ("w-2", "lost", "-/4"),
        ("w-1", "lost", "-/4"),
    ]
    assert out.stderr == ""


def test_coordinators_table_and_json(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`coordinators` shows one row a member, live first, and the same as JSON."""
    fake.coordinators = [
        CoordinatorInfo("c-1", "http://c1:8750", "live", ("g1", "g2"), 4, 3, fake.now - 2),
        CoordinatorInfo("c-2", "http://c2:8750", "lost", (), 0, 0, fake.now - 40),
    ]
    out = run_cli(["coordinators"], fake, tmp_path)
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "URL",
        "STATE",
        "GROUPS",
        "WORKERS",
        "RUNNING",
        "LAST",
        "HEARD",
    ]
    assert lines[1].split() == ["c-1", "http://c1:8750", "live", "2", "4", "3", "2s", "ago"]
    assert lines[2].split()[:3] == ["c-2", "http://c2:8750", "lost"]
    doc = json.loads(run_cli(["coordinators", "--json"], fake, tmp_path).stdout)
    assert [c["state"] for c in doc["coordinators"]] == ["live", "lost"]


def test_list_shows_jobs_newest_first(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`list` shows one row a job, newest first, with done/total."""
    fake.add_job("first")
    fake.add_job("second", script=[Step("running", {"done": 1})])
    fake.jobs["job-2"].advance()
    out = run_cli(["list"], fake, tmp_path)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "DONE/TOTAL", "CREATED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["job-2", "second", "running", "1/2"],
        ["job-1", "first", "running", "0/2"],
    ]


def test_logs_prints_stdout_then_stderr_under_headers(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`logs` shows the last attempt's stdout then stderr, each under its own header."""
    job = fake.add_job()
    for n in (1, 2):
        job.logs[("a", n)] = {
            "task": "a",
            "attempt": n,
            "state": "failed",
            "exit_code": n,
            "error": None,
            "stdout": f"out {n}\n",
            "stderr": f"err {n}\n",
            "worker": "alice",
        }
    out = run_cli(["logs", "job-1", "a"], fake, tmp_path)
    assert out.status == EXIT_OK
    assert out.stdout == (
        "task a, attempt 2 on alice: failed, exit code 2\n"
        "==> stdout <==\nout 2\n==> stderr <==\nerr 2\n"
    )
    out = run_cli(["logs", "job-1", "a", "--attempt", "1"], fake, tmp_path)
    assert "out 1" in out.stdout and "out 2" not in out.stdout


def test_logs_of_an_unknown_task_exits_2(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`logs` for a task the job does not have exits 2 with the coordinator's message."""
    fake.add_job()
    out = run_cli(["logs", "job-1", "zzz"], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert "has no task zzz" in out.stderr


def _log(n: int, state: str, out: str = "") -> dict[str, object]:
    return {
        "task": "a",
        "attempt": n,
        "state": state,
        "exit_code": None if state == "running" else (0 if state == "succeeded" else 1),
        "error": None,
        "stdout": out,
        "stderr": "",
        "worker": "alice",
    }


def _task(state: str) -> dict[str, object]:
    return {
        "id": "a",
        "state": state,
        "cost": 1,
        "worker": None,
        "attempts": 0,
        "started": None,
        "ended": None,
    }


def test_logs_follow_prints_each_attempt_as_it_ends(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`logs --follow` waits for the task's attempts: it prints the failed one and then its
    retry, each once it has ended, says on standard error what it waits for, and exits 0 once
    the task is done."""
    job = fake.add_job()
    job.tasks = [_task("ready")]

    job.log_script = [
        lambda: None,  # no attempt yet
        lambda: job.logs.update({("a", 1): _log(1, "running")}),
        lambda: job.logs.update({("a", 1): _log(1, "failed", "first\n")}),
        lambda: job.logs.update({("a", 2): _log(2, "running")}),
        lambda: None,
        lambda: (
            job.logs.update({("a", 2): _log(2, "succeeded", "second\n")}),
            job.tasks.__setitem__(0, _task("done")),
        ),
    ]
    out = run_cli(["logs", "job-1", "a", "--follow"], fake, tmp_path)
    assert out.status == EXIT_OK, out.stderr
    assert out.stdout == (
        "task a, attempt 1 on alice: failed, exit code 1\n==> stdout <==\nfirst\n"
        "==> stderr <==\n(empty)\n"
        "task a, attempt 2 on alice: succeeded, exit code 0\n==> stdout <==\nsecond\n"
        "==> stderr <==\n(empty)\n"
    )
    assert out.stderr.splitlines() == [
        "task a is ready: waiting for its first attempt to end",
        "task a, attempt 1 on alice: running; its output comes when it ends",
        "task a, attempt 2 on alice: running; its output comes when it ends",
        "task a done",
    ]


def test_logs_follow_of_a_failed_task_exits_1_with_json_lines(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """On a task that has ended, `logs --follow --json` prints its last attempt as one JSON
    line and exits 1 if the task failed."""
    job = fake.add_job()
    job.tasks = [_task("failed")]
    job.logs[("a", 3)] = _log(3, "failed", "boom\n")
    out = run_cli(["logs", "job-1", "a", "--follow", "--json"], fake, tmp_path)
    assert out.status == EXIT_JOB_FAILED
    [line] = out.stdout.splitlines()
    assert json.loads(line)["stdout"] == "boom\n"
    assert out.stderr == "task a failed\n"


def test_logs_follow_of_an_unknown_task_exits_2(fake: FakeCoordinator, tmp_path: Path) -> None:
    fake.add_job().tasks = [_task("ready")]
    out = run_cli(["logs", "job-1", "zzz", "--follow"], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert out.stderr == "xwch-client: job job-1 has no task zzz\n"


def test_tasks_state_shows_only_tasks_in_those_states(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`tasks --state` keeps the tasks in the state named, or in any of several."""
    job = fake.add_job()
    job.tasks = [
        {**_task(state), "id": state} for state in ("done", "failed", "ready", "cancelled")
    ]
    out = run_cli(["tasks", "job-1", "--state", "failed"], fake, tmp_path)
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["failed"]
    out = run_cli(["tasks", "job-1", "--state", "failed,cancelled", "--json"], fake, tmp_path)
    assert [t["id"] for t in out.json()["tasks"]] == ["failed", "cancelled"]


def test_tasks_state_of_no_such_state_exits_2(fake: FakeCoordinator, tmp_path: Path) -> None:
    """An unknown state is a usage error naming it and the states there are; nothing is sent."""
    out = run_cli(["tasks", "job-1", "--state", "finished"], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert "--state 'finished': finished is not a task state (one of blocked, ready" in out.stderr
    assert fake.requests == []


def test_cancel_stops_the_job(fake: FakeCoordinator, tmp_path: Path) -> None:
    """`cancel` cancels the job and says so."""
    fake.add_job()
    out = run_cli(["cancel", "job-1"], fake, tmp_path)
    assert out.status == EXIT_OK
    assert fake.jobs["job-1"].state == "cancelled"
    assert "job job-1 cancelled" in out.stdout


def test_retry_reruns_an_ended_job_and_refuses_a_running_one(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`retry` restarts a cancelled job; a running job cannot be retried (exit 2, reason)."""
    fake.add_job()
    running = run_cli(["retry", "job-1"], fake, tmp_path)
    assert running.status == 2 and "job-1 is running" in running.stderr
    run_cli(["cancel", "job-1"], fake, tmp_path)
    out = run_cli(["retry", "job-1"], fake, tmp_path)
    assert out.status == EXIT_OK
    assert fake.jobs["job-1"].state == "running"
    assert "job job-1 running" in out.stdout


def test_results_of_a_running_job_says_so_and_exits_1(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`results` on a job still running downloads nothing, says why and how to wait, exit 1."""
    fake.add_job(total=4)
    out = run_cli(["results", "job-1", "-o", str(tmp_path / "r")], fake, tmp_path)
    assert out.status == EXIT_JOB_FAILED
    assert "job job-1 is still running (0/4 tasks done)" in out.stderr
    assert "xwch-client wait job-1" in out.stderr
    assert not (tmp_path / "r").exists()


def test_results_of_a_job_with_missing_objects_exit_2(
    fake: FakeCoordinator, tmp_path: Path
) -> None:
    """`results` whose objects no warehouse holds exits 2 with the coordinator's reason."""
    job = fake.add_job(script=[DONE])
    job.results = [{"task": "a", "output": "o", "digest": "0" * 64, "size": 1}]
    out = run_cli(["results", "job-1", "-o", str(tmp_path / "r")], fake, tmp_path)
    assert out.status == EXIT_USAGE
    assert "not stored" in out.stderr


def _worker(last_heard: float = 0.0, **extra: object) -> dict[str, object]:
    return {
        "id": "w-1",
        "name": "alice",
        "state": "alive",
        "address": "10.0.0.2",
        "platform": "linux-x86_64",
        "cores": 8,
        "memory": 16 * 1024**3,
        "slots": 4,
        "performance": 1.5,
        "tasks_done": 12,
        "last_heard": last_heard,
        "busy": 0,
        **extra,
    }


def test_a_malformed_answer_exits_3(fake: FakeCoordinator, tmp_path: Path) -> None:
    """A coordinator answering in a shape the client does not know exits 3, naming the field."""
    fake.workers = [{"name": "alice"}]
    out = run_cli(["workers"], fake, tmp_path)
    assert out.status == EXIT_COORDINATOR
    assert "workers[0]" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_coordinator_failure_exits_3(fake: FakeCoordinator, tmp_path: Path) -> None:
    """A coordinator that fails (HTTP 5xx) exits 3, like one that cannot be reached."""
    fake.broken = HttpError(500, "internal", "database is locked")
    out = run_cli(["list"], fake, tmp_path)
    assert out.status == EXIT_COORDINATOR
    assert "database is locked" in out.stderr
