"""A second ``xwch-coordinator`` process on the first one's SQLite store is refused at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_warehouse_process import PROCESS_TIMEOUT, ROOT, Process, env

__all__ = ["env"]  # the fixture, used by name


def test_a_second_coordinator_on_one_sqlite_store_exits_2_naming_the_first(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "coordinator"
    command = [sys.executable, "-m", "xwch.coordinator", "--data", str(data)]
    first = Process([*command, "--listen", "tcp:0:interface=127.0.0.1"], env)
    try:
        url = first.expect("xwch-coordinator listening on")
        second = subprocess.run(
            [*command, "--listen", "tcp:0:interface=127.0.0.1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
        assert second.returncode == 2, second.stderr
        [line] = second.stderr.strip().splitlines()
        assert url in line and "PostgreSQL" in line
        assert second.stdout == ""
    finally:
        first.stop()
