"""A running ``xwch-local`` seen from outside: start it, learn its URL, stop it, leave nothing.

Used by the demo and by the integration tests; plain ``subprocess`` because both are
synchronous scripts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class LocalPlatformProcess:
    """``python -m xwch.local`` in its own ``XWCH_HOME``."""

    def __init__(
        self,
        home: Path,
        workers: int = 2,
        slots: int = 2,
        warehouses: int = 2,
        port: int = 0,
        extra: Sequence[str] = (),
    ) -> None:
        self.home = home
        self.args = [
            sys.executable,
            "-m",
            "xwch.local",
            "--workers",
            str(workers),
            "--slots",
            str(slots),
            "--warehouses",
            str(warehouses),
            "--port",
            str(port),
            *extra,
        ]
        self.process: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.descendants: list[psutil.Process] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XWCH_HOME"] = str(self.home)
        env.pop("XWCH_COORDINATOR", None)
        env.pop("XWCH_TOKEN", None)
        return env

    def start(self) -> str:
        """Start it and return the coordinator's URL once every process is ready."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=(self.home / "xwch-local.stderr").open("w"),
            env=self.env(),
            text=True,
        )
        found: list[str] = []
        reader = threading.Thread(target=self._read_url, args=(found,), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not found:
            self.stop()
            raise RuntimeError(f"xwch-local did not start: {self.stderr_text()}")
        self.url = found[0]
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        return self.url

    def _read_url(self, found: list[str]) -> None:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line.startswith("http"):
            found.append(line)

    def stderr_text(self) -> str:
        path = self.home / "xwch-local.stderr"
        return path.read_text() if path.exists() else ""

    def state(self) -> dict[str, Any]:
        """What ``$XWCH_HOME/local.json`` says: each process's name, pid and address."""
        return json.loads((self.home / "local.json").read_text())  # type: ignore[no-any-return]

    def stop(self) -> list[int]:
        """SIGTERM xwch-local, wait for it, and return the pids of any process left behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Those it had at start, and any started since (a child started again).
        left = {p.pid: p for p in [*self.descendants, *processes_in(self.home)] if _alive(p)}
        for p in left.values():
            p.kill()
        leaked = sorted(left)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        return leaked


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _within(folder: str | None, home: Path) -> bool:
    return folder is not None and (Path(folder) == home or home in Path(folder).parents)


def processes_in(home: Path) -> list[psutil.Process]:
    """The processes running with ``XWCH_HOME`` set to ``home`` or a folder in it: an
    xwch-local there, its children and theirs (they inherit it; workers have their own home
    inside), even once xwch-local itself has exited."""
    found = []
    for p in psutil.process_iter():
        try:
            if _within(p.environ().get("XWCH_HOME"), home) and _alive(p):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
