"""The ``xwch-warehouse`` process on loopback, against a fake coordinator process."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from xwch import capability
from xwch.protocol.wire import CAPABILITY_HEADER, PACKET_DIGEST_HEADER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "warehouse-token"
KEY = "k" * 32
WAREHOUSE_ID = "wh-1"
# Generous: a loaded CI machine may take seconds to start Python and Twisted.
PROCESS_TIMEOUT = 60.0


class Process:
    """A child process whose standard output is read line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def expect(self, prefix: str) -> str:
        """The next line of output, which must start with ``prefix``."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {prefix!r} line; stderr:\n{''.join(self.stderr)}"
                ) from None
            if line is None:
                raise AssertionError(f"exited before {prefix!r}; stderr:\n{''.join(self.stderr)}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=PROCESS_TIMEOUT)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=PROCESS_TIMEOUT)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XWCH_")}
    env["XWCH_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def coordinator(env: dict[str, str]) -> Iterator[tuple[Process, str]]:
    process = Process(
        [sys.executable, "-m", "tests.fakes.fake_coordinator", "--token", TOKEN, "--key", KEY],
        env,
    )
    try:
        url = process.expect("fake-coordinator listening on")
        yield process, url
    finally:
        process.kill()


def request(
    method: str, url: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=PROCESS_TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_warehouse_process_registers_stores_and_serves(
    coordinator: tuple[Process, str], env: dict[str, str], tmp_path: Path
) -> None:
    """A started warehouse tells its URL, registers, stores an upload (reported) and serves it."""
    fake, coordinator_url = coordinator
    warehouse = Process(
        [
            sys.executable,
            "-m",
            "xwch.warehouse",
            "--coordinator",
            coordinator_url,
            "--token",
            TOKEN,
            "--data",
            str(tmp_path / "data"),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--site",
            "lab",
        ],
        env,
    )
    try:
        # Registered first, then it says it is listening (ready to serve).
        registered = fake.expect("registered")
        url = warehouse.expect("xwch-warehouse listening on")
        assert url.startswith("http://127.0.0.1:") and registered == url

        data = os.urandom(5000)
        digest = hashlib.sha256(data).hexdigest()
        expires = time.time() + 600
        put = capability.issue(KEY.encode(), "put", digest, WAREHOUSE_ID, expires)
        code, _, body = request(
            "PUT",
            f"{url}/objects/{digest}?offset=0&size={len(data)}",
            {CAPABILITY_HEADER: put, PACKET_DIGEST_HEADER: digest},
            data,
        )
        assert (code, json.loads(body)) == (201, {"stored": True})
        # Reported before the 201, so the line is already there.
        assert fake.expect("objects") == f"{digest} {len(data)}"

        get = capability.issue(KEY.encode(), "get", digest, WAREHOUSE_ID, expires)
        code, headers, body = request(
            "GET", f"{url}/objects/{digest}", {CAPABILITY_HEADER: get, "Range": "bytes=100-199"}
        )
        assert (code, body) == (206, data[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"

        code, _, body = request("GET", f"{url}/health", {})
        assert code == 200 and json.loads(body)["ok"] is True

        assert warehouse.stop() == 0
    finally:
        warehouse.kill()


def test_warehouse_without_a_coordinator_is_a_usage_error(env: dict[str, str]) -> None:
    """Started with no coordinator configured, the warehouse exits 2 and says what is missing."""
    done = subprocess.run(
        [sys.executable, "-m", "xwch.warehouse", "--token", TOKEN],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 2
    assert "no coordinator" in done.stderr
