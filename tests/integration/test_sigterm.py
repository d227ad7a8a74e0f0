"""SIGTERM stops every service in the states not seen elsewhere: a worker and a warehouse that
wait for a coordinator, a worker running an attempt or holding one suspended, a coordinator
holding workers' requests, xwch-local while it starts and while a child waits to restart.

(A coordinator and a warehouse serving, and xwch-local running, are stopped by SIGTERM at the end
of test_coordinator_store.py, test_warehouse_process.py and every whole-platform test.)
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.support import NATIVE, client, client_json, hours_away, job_file, wait_for
from tests.integration.test_warehouse_process import PROCESS_TIMEOUT, Process, env
from xwch.localprocess import LocalPlatformProcess, processes_in

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.integration

# Far more than stopping takes (the worker gives its attempts back within 5 s); only a
# process that ignores SIGTERM reaches it.
STOPPED_WITHIN = 60.0
# How long starting a part, an attempt or a suspension may take on a loaded machine.
STARTING = 60.0
# An attempt that runs until it is stopped.
SPIN_ARGS = ("--sleep", "600")


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a coordinator that is not there (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def terminated(process: Process) -> int:
    """SIGTERM ``process``; its exit status once it has exited."""
    process.popen.send_signal(signal.SIGTERM)
    return process.popen.wait(timeout=STOPPED_WITHIN)


def said(process: Process, text: str) -> bool:
    return any(text in line for line in process.stderr)


def test_a_worker_waiting_for_its_coordinator_stops_on_sigterm(
    env: dict[str, str], closed_port: int, tmp_path: Path
) -> None:
    """A worker retrying its registration with a coordinator that is not there exits 0."""
    worker = Process(
        [
            sys.executable,
            "-m",
            "xwch.worker",
            "--coordinator",
            f"http://127.0.0.1:{closed_port}",
            "--token",
            "t",
            "--data",
            str(tmp_path / "worker"),
            "--site",
            "lab",
        ],
        env,
    )
    try:
        wait_for(lambda: said(worker, "cannot register"), PROCESS_TIMEOUT, "a retry")
        assert terminated(worker) == 0
    finally:
        worker.kill()


def test_a_warehouse_waiting_for_its_coordinator_stops_on_sigterm(
    env: dict[str, str], closed_port: int, tmp_path: Path
) -> None:
    """A warehouse retrying its registration with a coordinator that is not there exits 0."""
    warehouse = Process(
        [
            sys.executable,
            "-m",
            "xwch.warehouse",
            "--coordinator",
            f"http://127.0.0.1:{closed_port}",
            "--token",
            "t",
            "--data",
            str(tmp_path / "warehouse"),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        env,
    )
    try:
        wait_for(
            lambda: said(warehouse, "cannot register with the coordinator"),
            PROCESS_TIMEOUT,
            "a retry",
        )
        assert terminated(warehouse) == 0
    finally:
        warehouse.kill()


@pytest.fixture
def platform(tmp_path: Path, native_build: Path) -> Iterator[LocalPlatformProcess]:
    """Two workers of one slot, nothing started again: a process stopped stays stopped."""
    local = LocalPlatformProcess(
        tmp_path / "home", workers=2, slots=1, warehouses=1, extra=["--no-restart"]
    )
    local.start()
    try:
        yield local
    finally:
        leaked = local.stop()
        assert leaked == [], f"processes left behind: {leaked}"


def spinners(pid: int) -> list[psutil.Process]:
    """The spin programs started by process ``pid`` (its attempts; each runs from the cache,
    named by its digest, so it is known by its arguments)."""
    found = []
    try:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                if p.cmdline()[1:] == list(SPIN_ARGS):
                    found.append(p)
            except psutil.Error:
                continue
    except psutil.NoSuchProcess:
        pass
    return found


def stopped(pid: int) -> bool:
    """Process ``pid`` has exited (waited for by xwch-local, or a zombie at worst)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_workers_running_or_suspended_stop_on_sigterm_and_leave_no_attempt(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    """Two workers each running a long attempt, one of them suspended (its attempt SIGSTOPped):
    SIGTERM stops both, and no attempt's program is left, stopped or running."""
    job = job_file(
        tmp_path,
        {
            "name": "long",
            "binaries": {"spin": str(NATIVE / "spin")},
            "tasks": [
                {
                    "id": "spin-{i}",
                    "foreach": {"i": {"range": [0, 2]}},
                    "binary": "spin",
                    "args": list(SPIN_ARGS),
                }
            ],
        },
    )
    assert client(platform, "submit", str(job)).returncode == 0
    workers = {w["name"]: w["pid"] for w in platform.state()["workers"]}
    pids = [workers["worker-1"], workers["worker-2"]]
    wait_for(lambda: all(spinners(pid) for pid in pids), STARTING, "both attempts running")
    programs = [p for pid in pids for p in spinners(pid)]

    (platform.home / "worker-2" / "worker.toml").write_text(hours_away())
    wait_for(
        lambda: any(w["state"] == "suspended" for w in client_json(platform, "workers")["workers"]),
        STARTING,
        "worker-2 suspended",
    )
    wait_for(
        lambda: any(p.status() == psutil.STATUS_STOPPED for p in spinners(pids[1])),
        STARTING,
        "worker-2's attempt stopped",
    )

    for pid in pids:
        psutil.Process(pid).send_signal(signal.SIGTERM)
    wait_for(lambda: all(stopped(pid) for pid in pids), STOPPED_WITHIN, "both workers gone")
    _, alive = psutil.wait_procs(programs, timeout=STOPPED_WITHIN)
    assert alive == []


def test_a_coordinator_holding_work_requests_stops_on_sigterm(
    platform: LocalPlatformProcess,
) -> None:
    """Idle workers' Work Requests wait at the coordinator for work: SIGTERM stops it all the
    same, with status 0 (xwch-local says so)."""
    wait_for(lambda: len(client_json(platform, "workers")["workers"]) == 2, STARTING, "two workers")
    pid = platform.state()["coordinator"]["pid"]
    psutil.Process(pid).send_signal(signal.SIGTERM)
    wait_for(lambda: stopped(pid), STOPPED_WITHIN, "the coordinator gone")
    wait_for(
        lambda: "coordinator exited with status 0" in platform.stderr_text(),
        STOPPED_WITHIN,
        "xwch-local telling the coordinator's exit",
    )


def local_process(home: Path, *extra: str) -> subprocess.Popen[str]:
    local = LocalPlatformProcess(home, workers=1, slots=1, warehouses=1, extra=extra)
    home.mkdir(parents=True)
    return subprocess.Popen(
        local.args,
        env=local.env(),
        stdout=subprocess.DEVNULL,
        stderr=(home / "xwch-local.stderr").open("w"),
        text=True,
    )


def test_xwch_local_stops_on_sigterm_while_it_starts(tmp_path: Path) -> None:
    """SIGTERM as soon as xwch-local has started its first child (the coordinator, not ready
    yet): it stops what it started and exits, leaving no process."""
    home = tmp_path / "home"
    local = local_process(home)
    try:
        wait_for(lambda: psutil.Process(local.pid).children(), PROCESS_TIMEOUT, "a first child")
        local.send_signal(signal.SIGTERM)
        local.wait(timeout=STOPPED_WITHIN)
        assert wait_for(lambda: not processes_in(home) or None, STOPPED_WITHIN, "no child left")
    finally:
        local.kill()
        for p in processes_in(home):
            p.kill()


def test_xwch_local_stops_on_sigterm_while_a_child_waits_to_restart(tmp_path: Path) -> None:
    """A worker killed, its restart scheduled: SIGTERM then stops xwch-local at once, with
    nothing started again and no process left."""
    home = tmp_path / "home"
    local = local_process(home)
    try:
        wait_for(lambda: (home / "local.json").exists(), STARTING, "xwch-local ready")
        platform = LocalPlatformProcess(home)
        worker = platform.state()["workers"][0]["pid"]
        psutil.Process(worker).kill()
        wait_for(
            lambda: "worker-1 was killed by SIGKILL; restarting it" in platform.stderr_text(),
            STOPPED_WITHIN,
            "the restart announced",
        )
        local.send_signal(signal.SIGTERM)
        assert local.wait(timeout=STOPPED_WITHIN) == 0
        assert wait_for(lambda: not processes_in(home) or None, STOPPED_WITHIN, "no child left")
    finally:
        local.kill()
        for p in processes_in(home):
            p.kill()
