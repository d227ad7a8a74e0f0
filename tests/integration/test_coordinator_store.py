"""A second ``xwch-coordinator`` process on the first one's SQLite store is refused at start."""

from __future__ import annotations

import socket
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


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A wrong password (or a server down): one line, the password hidden, no stack."""
    url = "postgresql://nobody:s3cret@127.0.0.1:5432/nothing"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xwch.coordinator",
            "--db",
            url,
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 2
    mine = [line for line in done.stderr.splitlines() if line.startswith("xwch-coordinator:")]
    assert len(mine) == 1 and "cannot open the store postgresql://nobody:***@" in mine[0]
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    """A coordinator that cannot listen says so and exits, rather than stay alive."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "xwch.coordinator",
                "--data",
                str(tmp_path / "coordinator"),
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
    assert done.returncode == 2
    mine = [line for line in done.stderr.splitlines() if line.startswith("xwch-coordinator:")]
    assert len(mine) == 1 and f"cannot listen on tcp:{port}" in mine[0]
    assert "Traceback" not in done.stderr
