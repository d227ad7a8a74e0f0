"""`xwch-client` as a real process: what needs no coordinator at all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TIMEOUT = 60


def xwch_client(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XWCH_")}
    env["XWCH_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "xwch.client", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_help_lists_the_commands(tmp_path: Path) -> None:
    """`xwch-client --help` works and names every command."""
    done = xwch_client("--help", home=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("submit", "wait", "status", "tasks", "workers", "results", "logs", "cancel"):
        assert command in done.stdout
    assert xwch_client("submit", "--help", home=tmp_path).returncode == 0


def test_invalid_job_file_exits_2_without_connecting(tmp_path: Path) -> None:
    """An invalid job file exits 2 naming the file and place, and never contacts the coordinator."""
    bad = tmp_path / "dag.json"
    bad.write_text(json.dumps({"name": "x", "binaries": {}, "tasks": [{"id": "a", "binary": "b"}]}))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        done = xwch_client("submit", str(bad), "--coordinator", url, "--token", "t", home=tmp_path)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert done.returncode == 2
    assert str(bad) in done.stderr and "tasks[0].binary" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_unreachable_coordinator_exits_3(tmp_path: Path) -> None:
    """`list` against a coordinator nobody runs exits 3 with a one-line reason."""
    url = f"http://127.0.0.1:{closed_port()}"
    done = xwch_client("list", "--coordinator", url, "--token", "t", home=tmp_path)
    assert done.returncode == 3
    assert "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    """An unknown command exits 2 with the usage."""
    done = xwch_client("frobnicate", home=tmp_path)
    assert done.returncode == 2
    assert "usage:" in done.stderr
