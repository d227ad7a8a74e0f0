"""A PostgreSQL server of a test's own, to stop and start again mid-job without disturbing the
shared one (other tests, other members of the team, use it)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

SERVER_TIMEOUT = 60


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """initdb'd in a temporary folder, trust auth, listening on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            why = "no PostgreSQL server binaries (initdb) on this machine"
            if os.environ.get("CI"):
                raise AssertionError(f"{why}; CI must test a restarted store")
            raise unittest.SkipTest(why)
        self._bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="xwch-pg-"))
        self.port = _free_port()
        # initdb and the server refuse to run as root: run them as postgres, who owns the folder.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / program), *args],
            check=True,
            capture_output=True,
            timeout=SERVER_TIMEOUT,
        )

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
            "-o", options, "-w", "-t", str(SERVER_TIMEOUT), *args,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)
