"""``xwch-worker status``: the running worker's status file, written and read back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from xwch.worker.__main__ import main
from xwch.worker.status import (
    STALE_AFTER,
    StatusWriter,
    format_status,
    is_running,
    read_status,
)

NOW = 1_700_000_000.0


def snapshot() -> dict[str, Any]:
    return {
        "state": "suspended",
        "worker_id": "w7",
        "coordinator": "http://coord:8750",
        "slots": 2,
        "attempts": [{"attempt": "a1", "job": "j1", "task": "tile-3", "state": "suspended"}],
        "governor": {
            "computing": False,
            "reason": "the computer is in use (5 min idle required)",
            "suspended_since": NOW - 90,
            "idle_seconds": 30.0,
            "other_cpu_load": 12.0,
        },
        "cache": {"used": 3 << 30, "limit": 10 << 30, "objects": 41, "evicted": 2},
        "preferences": {"max_cpus": "50%", "idle_minutes": 5, "upload_rate": 1 << 20},
        "sandbox": {"user": "nobody", "landlock": True},
        "last_contact": NOW - 4,
    }


def test_status_is_written_at_start_and_every_period(tmp_path: Path) -> None:
    """The running worker rewrites its status file every few seconds, whole each time."""
    clock = Clock()
    clock.advance(NOW)
    path = tmp_path / "status.json"
    writer = StatusWriter(clock, path, snapshot)
    writer.startService()
    first = read_status(path)
    assert first is not None and first["written"] == NOW and first["pid"] == os.getpid()
    clock.advance(StatusWriter.PERIOD)
    second = read_status(path)
    assert second is not None and second["written"] == NOW + StatusWriter.PERIOD
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    writer.stopService()
    stopped = read_status(path)
    assert stopped is not None and stopped["state"] == "stopped"
    assert is_running(stopped, NOW + 6) == (False, "the worker stopped 1 s ago")


def test_running_worker_is_described() -> None:
    """Status tells the attempts, why it is suspended, cache use, limits and last contact."""
    doc = {**snapshot(), "written": NOW - 1, "pid": os.getpid()}
    running, why = is_running(doc, NOW)
    assert running
    text = format_status(doc, NOW, running, why)
    assert f"running (pid {os.getpid()}), worker w7" in text
    assert "suspended 90 s ago: the computer is in use" in text
    assert "a1  j1/tile-3  suspended" in text
    assert "3.0 GiB of 10.0 GiB, 41 object(s), 2 evicted" in text
    assert "max_cpus 50%" in text and "upload_rate 1.0 MiB/s" in text
    assert "runs tasks as nobody" in text
    assert "last contact: 4 s ago" in text


def test_stale_or_orphaned_status_means_not_running() -> None:
    """A status file not refreshed for long, or naming a dead process, is no running worker."""
    doc = {**snapshot(), "written": NOW - STALE_AFTER - 1, "pid": os.getpid()}
    assert is_running(doc, NOW)[0] is False
    assert "stale" in is_running(doc, NOW)[1]
    fresh = {**doc, "written": NOW}
    assert is_running(fresh, NOW, alive=lambda pid: False)[1].startswith("the worker (pid")
    assert is_running(None, NOW) == (False, "no worker has run here (no status file)")


def test_status_command_without_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``xwch-worker status`` where no worker runs says so and exits 1."""
    monkeypatch.setenv("XWCH_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit:
        main(["status"])
    assert exit.value.code == 1
    assert capsys.readouterr().out == (
        "xwch-worker: not running: no worker has run here (no status file)\n"
    )


def test_status_command_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status --json`` gives the whole status document of a running worker."""
    monkeypatch.setenv("XWCH_HOME", str(tmp_path))
    (tmp_path / "worker").mkdir()
    doc = {**snapshot(), "written": time.time(), "pid": os.getpid()}
    (tmp_path / "worker" / "status.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as exit:
        main(["status", "--json"])
    assert exit.value.code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["running"] is True and shown["status"]["worker_id"] == "w7"
