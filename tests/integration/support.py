"""What the whole-platform tests share: a running xwch-local, the client, the API, polling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from xwch.localprocess import LocalPlatformProcess

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native" / "build"
# Long enough for a client command against a loaded two-core machine.
CLIENT_TIMEOUT = 300

T = TypeVar("T")


@contextmanager
def running_platform(home: Path, **kwargs: Any) -> Iterator[LocalPlatformProcess]:
    """xwch-local started, and stopped afterwards with no process left behind."""
    platform = LocalPlatformProcess(home, **kwargs)
    platform.start()
    try:
        yield platform
    finally:
        leaked = platform.stop()
        assert leaked == [], f"processes left behind: {leaked}"


def client(
    platform: LocalPlatformProcess, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``xwch-client ARGS`` against the platform."""
    return subprocess.run(
        [sys.executable, "-m", "xwch.client", *args],
        env=platform.env(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        cwd=cwd,
    )


def client_json(platform: LocalPlatformProcess, *args: str) -> Any:
    done = client(platform, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def api_get(platform: LocalPlatformProcess, path: str) -> Any:
    """GET an API route with the platform's client token; None when it answers an error."""
    config = tomllib.loads((platform.home / "client.toml").read_text())
    request = urllib.request.Request(
        config["coordinator"] + "/api/v1" + path,
        headers={"Authorization": "Bearer " + config["token"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except OSError:
        return None


def job_file(folder: Path, doc: dict[str, Any], name: str = "dag.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def script(folder: Path, name: str, body: str) -> Path:
    """An executable shell script, usable as a job's binary."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll an observable condition of the platform until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def hours_away() -> str:
    """A worker.toml line under which a worker computes nothing for the next three hours (its
    allowed hours start then, local time): a worker suspended for as long as a test runs."""
    start = (time.localtime().tm_hour + 3) % 24
    return f'hours = "{start:02d}:00-{(start + 1) % 24:02d}:00"\n'


def tasks_of(platform: LocalPlatformProcess, job_id: str) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in client_json(platform, "tasks", job_id)["tasks"]}
