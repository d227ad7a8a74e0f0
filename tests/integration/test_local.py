"""xwch-local itself as a real process: how it tells of a child that dies."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.support import running_platform, wait_for
from xwch.localprocess import LocalPlatformProcess, processes_in

pytestmark = pytest.mark.integration

# Far beyond what a start-up failing at once takes; only a hang reaches it.
FINISH_TIMEOUT = 180


def test_a_worker_killed_is_reported_by_its_signal_and_started_again(tmp_path: Path) -> None:
    """SIGKILL a worker: xwch-local says on standard error that it was killed by SIGKILL and
    is being restarted, with the end of its log, then that it is ready again."""
    with running_platform(tmp_path / "home", workers=1, slots=1, warehouses=1) as platform:
        victim = platform.state()["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(
            lambda: platform.state()["workers"][0]["restarts"] == 1, 60, "worker-1 started again"
        )
        log = platform.home / "logs" / "worker-1.log"
        report = platform.stderr_text().splitlines()
        killed = next(i for i, line in enumerate(report) if "worker-1 was killed" in line)
        assert report[killed].startswith(
            "xwch-local: worker-1 was killed by SIGKILL; restarting it"
        )
        assert report[killed].endswith(f"The end of {log}:")
        assert report[killed + 1].startswith("    ")
        assert "xwch-local: worker-1 is ready again (restart 1)" in report[killed + 1 :]
        assert platform.state()["workers"][0]["pid"] != victim["pid"]


def test_a_child_failing_before_it_is_ready_stops_everything_and_exits_1(tmp_path: Path) -> None:
    """A warehouse that exits as it starts (its data folder is a file): xwch-local names it
    and its exit status with the end of its log, stops what it had started and exits 1
    without waiting for a ready line that will never come."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "warehouse-2").write_text("a file where the warehouse wants its folder\n")
    local = LocalPlatformProcess(home, workers=1, warehouses=2)
    try:
        done = subprocess.run(
            local.args,
            env=local.env(),
            capture_output=True,
            text=True,
            timeout=FINISH_TIMEOUT,
            check=False,
        )
    finally:
        left = processes_in(home)
        for p in left:
            p.kill()
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    report = done.stderr.splitlines()
    log = home / "logs" / "warehouse-2.log"
    assert report[0] == (
        "xwch-local: warehouse-2 exited with status 2 before it was ready; stopping "
        f"everything. The end of {log}:"
    )
    assert report[1].startswith("    xwch-warehouse: --data ")
    assert not [line for line in report if "did not say it was ready" in line]
    assert left == []
    assert not (home / "logs" / "worker-1.log").exists()
