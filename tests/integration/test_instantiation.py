"""Coordinators and workers starting each other, as real processes on PostgreSQL: a coordinator
short of workers runs the worker command; workers that reach no coordinator start one each,
and of the coordinators they start exactly one serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from tests.backends import fresh_database, postgres_or_skip
from tests.integration.support import job_file, script, wait_for
from tests.integration.test_warehouse_process import PROCESS_TIMEOUT, ROOT, Process, env
from xwch.store.schema import coordinators, group_locks, workers

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.integration

LOOPBACK = "tcp:0:interface=127.0.0.1"
LEASE = "3"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    postgres_or_skip()
    with fresh_database("postgresql", tmp_path) as url:
        yield url.replace("postgresql+psycopg://", "postgresql://")


def token(store: str, role: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xwch.coordinator",
            "token",
            "create",
            "--role",
            role,
            "--db",
            store,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def query(store: str, statement: Any) -> list[Any]:
    engine = sa.create_engine(store.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


def alive_workers(store: str) -> list[str]:
    rows = query(store, sa.select(workers.c.name).where(workers.c.state == "alive"))
    return sorted(name for (name,) in rows)


def serving_url(store: str) -> str | None:
    rows = query(
        store,
        sa.select(coordinators.c.url)
        .select_from(group_locks.join(coordinators, coordinators.c.id == group_locks.c.holder))
        .where(group_locks.c.id == "g1"),
    )
    return rows[0][0] if rows else None


def free_port() -> int:
    """A port nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_pid(pid: int) -> None:
    """Stop a process this test did not start as its child: SIGTERM, then SIGKILL. A process
    whose parent is gone may stay a zombie of pid 1: stopped all the same."""
    try:
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(PROCESS_TIMEOUT)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(PROCESS_TIMEOUT)
    except psutil.NoSuchProcess:
        pass


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def log_of(process: Process) -> str:
    return "".join(process.stderr)


def test_a_coordinator_short_of_workers_starts_them_and_replaces_one_that_dies(
    tmp_path: Path, store: str, env: dict[str, str]
) -> None:
    """Two wanted: two workers started by the command and registered; one killed is reaped,
    logged and replaced; the workers outlive the coordinator that started them."""
    worker_token = token(store, "worker", env)
    pids = tmp_path / "pids"
    pids.mkdir()
    command = (
        f'echo $$ > {pids}/"$XWCH_START_ID"; exec {sys.executable} -m xwch.worker '
        f'--token {worker_token} --slots 1 --data {tmp_path}/"$XWCH_START_ID" '
        f'--name "w-$XWCH_START_ID"'
    )
    started = tmp_path / "coordinator" / "started-workers.log"
    coordinator = Process(
        [
            sys.executable,
            "-m",
            "xwch.coordinator",
            "--db",
            store,
            "--listen",
            LOOPBACK,
            "--data",
            str(tmp_path / "coordinator"),
            "--lease",
            LEASE,
            "--alive-interval",
            "1",
            "--min-workers",
            "2",
            "--worker-command",
            command,
            "--worker-start-interval",
            "0.5",
        ],
        env,
    )

    def started_pids() -> list[int]:
        return [int(p.read_text()) for p in pids.iterdir() if p.read_text().strip()]

    try:
        coordinator.expect("xwch-coordinator listening on")
        first = wait_for(
            lambda: len(alive_workers(store)) == 2 and alive_workers(store), 120, "two workers"
        )
        assert "2 wanted: started worker" in log_of(coordinator)
        # Their output in the coordinator's data folder, not on a pipe that dies with it.
        assert started.read_text().count("xwch-worker registered as") >= 2
        [victim, _] = sorted(started_pids())
        os.kill(victim, signal.SIGKILL)
        # Reaped by the coordinator, which says how it ended; lost, then replaced.
        wait_for(lambda: "killed by signal 9" in log_of(coordinator), 60, "the end logged")
        assert not running(victim)
        wait_for(lambda: len(started_pids()) == 3, 60, "a third start")
        wait_for(
            lambda: len(alive_workers(store)) == 2 and set(alive_workers(store)) != set(first),
            120,
            "the replacement to register",
        )
        assert coordinator.stop() == 0
        # Not children that die with it.
        survivors = [pid for pid in started_pids() if pid != victim]
        assert all(running(pid) for pid in survivors)
    finally:
        coordinator.kill()
        for pid in started_pids():
            stop_pid(pid)


def spawning_worker(
    tmp_path: Path, name: str, env: dict[str, str], store: str, dead: str, worker_token: str
) -> Process:
    return Process(
        [
            sys.executable,
            "-m",
            "xwch.worker",
            "--coordinator",
            dead,
            "--token",
            worker_token,
            "--slots",
            "1",
            "--data",
            str(tmp_path / name),
            "--name",
            name,
            "--spawn-coordinator",
            "--db",
            store,
            "--spawn-listen",
            LOOPBACK,
            "--spawn-after",
            "1",
        ],
        env,
    )


def spawned(tmp_path: Path, name: str) -> dict[str, Any]:
    try:
        doc = json.loads((tmp_path / name / "coordinator.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def test_workers_that_reach_no_coordinator_start_them_and_exactly_one_serves(
    tmp_path: Path, store: str, env: dict[str, str]
) -> None:
    """Two workers, no coordinator: each starts one on the store and registers with it; one of
    the two serves, the other stands by, and a job runs on both workers."""
    worker_token = token(store, "worker", env)
    warehouse_token = token(store, "warehouse", env)
    client_token = token(store, "client", env)
    dead = f"http://127.0.0.1:{free_port()}"
    names = ["w1", "w2"]
    processes = [spawning_worker(tmp_path, n, env, store, dead, worker_token) for n in names]
    warehouse: Process | None = None
    try:
        for process in processes:
            process.expect("xwch-worker registered as")
        urls = [spawned(tmp_path, n)["url"] for n in names]
        assert len(set(urls)) == 2, urls
        for process in processes:
            assert "registering with the coordinator started here" in log_of(process)
        listed = query(store, sa.select(coordinators.c.url))
        assert sorted(url for (url,) in listed) == sorted(urls)
        assert serving_url(store) in urls
        assert alive_workers(store) == names
        # A standby sends callers to the one serving: any of the two will do for the rest.
        everyone = ",".join(urls)
        warehouse = Process(
            [
                sys.executable,
                "-m",
                "xwch.warehouse",
                "--coordinator",
                everyone,
                "--token",
                warehouse_token,
                "--data",
                str(tmp_path / "warehouse"),
                "--listen",
                LOOPBACK,
            ],
            env,
        )
        warehouse.expect("xwch-warehouse listening on")
        echo = script(tmp_path, "echo.sh", 'echo "$1" > "$2"\n')
        job = job_file(
            tmp_path,
            {
                "name": "echo",
                "binaries": {"echo": str(echo)},
                "tasks": [
                    {
                        "id": "t-{i}",
                        "foreach": {"i": {"range": [0, 4]}},
                        "binary": "echo",
                        "args": ["{i}", "out.txt"],
                        "outputs": ["out.txt"],
                    }
                ],
            },
        )
        client = [sys.executable, "-m", "xwch.client", "--coordinator", everyone]
        client += ["--token", client_token]
        submitted = subprocess.run(
            [*client, "submit", str(job)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
        assert submitted.returncode == 0, submitted.stderr
        waited = subprocess.run(
            [*client, "wait", submitted.stdout.strip()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=3 * PROCESS_TIMEOUT,
        )
        assert waited.returncode == 0, waited.stderr
        # Still one serving, and the two members the workers started.
        assert serving_url(store) in urls
        assert len(query(store, sa.select(coordinators.c.id))) == 2
    finally:
        # The coordinators first, while their workers live to reap them.
        for name in names:
            pid = spawned(tmp_path, name).get("pid")
            if isinstance(pid, int):
                stop_pid(pid)
        if warehouse is not None:
            warehouse.kill()
        for process in processes:
            process.kill()
