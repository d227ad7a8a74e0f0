"""``xwch-coordinator`` refusing to start: another one on its SQLite store, a store it cannot
open, a port it cannot listen on. Each time: exit 2, one line on standard error, no stack, and
the process gone."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.integration.test_warehouse_process import PROCESS_TIMEOUT, ROOT, Process, env

__all__ = ["env"]  # the fixture, used by name

COORDINATOR = [sys.executable, "-m", "xwch.coordinator"]
LOOPBACK = "tcp:0:interface=127.0.0.1"


def refused(env: dict[str, str], *args: str) -> tuple[str, str]:
    """Run a coordinator that must refuse to start: (its one line, its whole stderr)."""
    done = subprocess.run(
        [*COORDINATOR, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    mine = [line for line in done.stderr.splitlines() if line.startswith("xwch-coordinator:")]
    assert len(mine) == 1, done.stderr
    return mine[0], done.stderr


def test_a_second_coordinator_on_one_sqlite_store_exits_2_naming_the_first(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = ["--data", str(tmp_path / "coordinator")]
    first = Process([*COORDINATOR, *data, "--listen", LOOPBACK], env)
    try:
        url = first.expect("xwch-coordinator listening on")
        line, _ = refused(env, *data, "--listen", LOOPBACK)
        assert url in line and "PostgreSQL" in line
    finally:
        assert first.stop() == 0  # and the first one stops cleanly, leaving the store


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    """A wrong password (or a server down): the password hidden."""
    url = "postgresql://nobody:s3cret@127.0.0.1:5432/nothing"
    line, stderr = refused(env, "--db", url, "--listen", LOOPBACK)
    assert "cannot open the store postgresql://nobody:***@" in line
    assert "s3cret" not in stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    """A coordinator that cannot listen says so and exits, rather than stay alive."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = ["--data", str(tmp_path / "coordinator")]
        line, _ = refused(env, *data, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert f"cannot listen on tcp:{port}" in line
