"""Several coordinators on one PostgreSQL store, as real processes on loopback: each serves
the jobs and workers of the groups it holds and sends callers about the others' to them; idle
workers follow the work; a member killed or frozen is replaced within its lease and no work is
lost or recorded twice."""

from __future__ import annotations

import http.cookiejar
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.backends import fresh_database, postgres_or_skip
from tests.integration.support import (
    client,
    job_file,
    running_platform,
    script,
    tasks_of,
    wait_for,
)
from tests.private_postgres import PrivatePostgres
from xwch.localprocess import LocalPlatformProcess
from xwch.protocol.states import AttemptStatus
from xwch.store.schema import attempts, coordinators, group_locks, jobs

pytestmark = pytest.mark.integration

LEASE = 3.0


@pytest.fixture
def private_server() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    postgres_or_skip()
    with fresh_database("postgresql", tmp_path) as url:
        yield url


def two_coordinators(home: Path, store: str) -> Any:
    plain = store.replace("postgresql+psycopg://", "postgresql://")
    # Two groups from the start: the workers, registering while the second member joins,
    # are spread over both.
    extra = ["--coordinators", "2", "--db", plain, "--lease", str(LEASE), "--groups", "2"]
    return running_platform(home, workers=2, slots=2, warehouses=1, extra=extra)


def slow_job(folder: Path, tasks: int = 16, seconds: float = 1.0) -> Path:
    slow = script(folder, "slow.sh", f'sleep {seconds}\necho "$1" > "$2"\n')
    return job_file(
        folder,
        {
            "name": "slow",
            "binaries": {"slow": str(slow)},
            "tasks": [
                {
                    "id": "t-{i}",
                    "foreach": {"i": {"range": [0, tasks]}},
                    "binary": "slow",
                    "args": ["{i}", "out.txt"],
                    "outputs": ["out.txt"],
                }
            ],
        },
    )


def read_store(store: str, query: sa.Select[Any]) -> list[Any]:
    """The rows of one query on the store, read from this test's own connection."""
    engine = sa.create_engine(store)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).all())
    finally:
        engine.dispose()


def holder_of(platform: LocalPlatformProcess, store: str, group: str) -> dict[str, Any]:
    """The coordinator of local.json holding ``group``, by the store (asking a coordinator
    could reach the one frozen)."""

    def find() -> dict[str, Any] | None:
        rows = read_store(
            store,
            sa.select(coordinators.c.url)
            .select_from(group_locks.join(coordinators, coordinators.c.id == group_locks.c.holder))
            .where(group_locks.c.id == group),
        )
        for child in platform.state()["coordinators"]:
            if rows and child["url"] == rows[0].url:
                return child  # type: ignore[no-any-return]
        return None

    return wait_for(find, 60, f"a coordinator to hold {group}")


def group_of_job(store: str, job_id: str) -> str:
    rows = read_store(store, sa.select(jobs.c.grp).where(jobs.c.id == job_id))
    return str(rows[0].grp or "g1")


def running_job(platform: LocalPlatformProcess, store: str, job_id: str) -> dict[str, Any]:
    """The coordinator running ``job_id``: the holder of its group."""
    return holder_of(platform, store, group_of_job(store, job_id))


def epoch_of(store: str, group: str) -> int:
    rows = read_store(store, sa.select(group_locks.c.epoch).where(group_locks.c.id == group))
    return int(rows[0].epoch) if rows else 0


def holders(store: str) -> dict[str, str]:
    """Group -> the member holding it."""
    rows = read_store(store, sa.select(group_locks.c.id, group_locks.c.holder))
    return {r.id: r.holder for r in rows if r.holder is not None}


def workers_of_job(store: str, job_id: str) -> set[str]:
    rows = read_store(store, sa.select(attempts.c.worker_id).where(attempts.c.job_id == job_id))
    return {r.worker_id for r in rows}


def succeeded_attempts(store: str, job_id: str | None = None) -> dict[str, int]:
    """Task id -> how many of its attempts the store has as succeeded (of ``job_id``, or
    of the only job)."""
    query = sa.select(attempts.c.task_id).where(attempts.c.state == AttemptStatus.SUCCEEDED)
    if job_id is not None:
        query = query.where(attempts.c.job_id == job_id)
    rows = read_store(store, query)
    return dict(Counter(row.task_id for row in rows))


def submit(platform: LocalPlatformProcess, path: Path) -> str:
    done = client(platform, "submit", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def dashboard_browser(platform: LocalPlatformProcess) -> urllib.request.OpenerDirector:
    """A browser (cookies kept, redirects followed) logged in to the dashboard by the link of
    `xwch-client dashboard`."""
    done = client(platform, "dashboard", "--no-open")
    assert done.returncode == 0, done.stderr
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(done.stdout.strip(), timeout=30) as page:
        assert page.status == 200
    assert [c.name for c in jar], "the login set no cookie"
    return browser


def test_the_serving_coordinator_killed_mid_job_is_replaced_and_nothing_runs_twice(
    tmp_path: Path, store: str, native_build: Path
) -> None:
    """... and a browser logged in to the dashboard before stays logged in at the new one."""
    with two_coordinators(tmp_path / "home", store) as platform:
        job_id = submit(platform, slow_job(tmp_path))
        browser = dashboard_browser(platform)

        def some_done() -> list[str]:
            return [t for t, row in tasks_of(platform, job_id).items() if row["state"] == "done"]

        done_before = wait_for(some_done, 120, "a first task to finish")
        group = group_of_job(store, job_id)
        running = running_job(platform, store, job_id)
        os.kill(running["pid"], signal.SIGKILL)
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        tasks = tasks_of(platform, job_id)
        assert {row["state"] for row in tasks.values()} == {"done"}
        assert all(tasks[t]["attempts"] == 1 for t in done_before)
        assert set(succeeded_attempts(store).values()) == {1}
        # The group changed hands: to the other member, or the killed one started again (a
        # new member).
        assert epoch_of(store, group) >= 2
        # A session the dead member opened: a 401 (log in again) would raise here.
        with browser.open(
            holder_of(platform, store, group)["url"] + "/dashboard/", timeout=30
        ) as page:
            assert page.status == 200


def test_a_frozen_coordinator_steps_down_when_thawed_and_nothing_is_recorded_twice(
    tmp_path: Path, store: str, native_build: Path
) -> None:
    with two_coordinators(tmp_path / "home", store) as platform:
        job_id = submit(platform, slow_job(tmp_path, tasks=12))
        group = group_of_job(store, job_id)
        frozen = running_job(platform, store, job_id)
        os.kill(frozen["pid"], signal.SIGSTOP)
        try:
            # Frozen past its lease: the other takes over.
            wait_for(
                lambda: holder_of(platform, store, group)["url"] != frozen["url"],
                60,
                "the other to take over",
            )
        finally:
            os.kill(frozen["pid"], signal.SIGCONT)
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        assert set(succeeded_attempts(store)) == {f"t-{i}" for i in range(12)}
        assert set(succeeded_attempts(store).values()) == {1}
        log = platform.home / "logs" / f"{frozen['name']}.log"
        wait_for(
            lambda: f"{group} was taken by another member" in log.read_text(),
            60,
            "the thawed one to let the group go",
        )


def test_a_member_sends_callers_about_a_job_to_the_member_running_it(
    tmp_path: Path, store: str, native_build: Path
) -> None:
    with two_coordinators(tmp_path / "home", store) as platform:
        job_id = submit(platform, slow_job(tmp_path, tasks=2, seconds=0.1))
        running = running_job(platform, store, job_id)
        [other] = [c for c in platform.state()["coordinators"] if c["url"] != running["url"]]
        asked = client(platform, "--coordinator", other["url"], "wait", job_id)
        assert asked.returncode == 0, asked.stderr
        status = client(platform, "--coordinator", other["url"], "status", job_id)
        assert status.returncode == 0 and "done" in status.stdout, status.stderr


def test_two_members_share_the_work_and_idle_workers_follow_it(
    tmp_path: Path, store: str, native_build: Path
) -> None:
    """Two jobs at once run on two members, each on its group's worker; then one job alone
    runs on both workers: the other group's, idle, is lent to the job's group."""
    with two_coordinators(tmp_path / "home", store) as platform:
        wait_for(lambda: len(set(holders(store).values())) == 2, 60, "each member to hold a group")
        folders = [tmp_path / name for name in ("a", "b", "c")]
        for folder in folders:
            folder.mkdir()
        first = submit(platform, slow_job(folders[0], tasks=6, seconds=1.0))
        second = submit(platform, slow_job(folders[1], tasks=6, seconds=1.0))
        assert group_of_job(store, first) != group_of_job(store, second)
        for job_id in (first, second):
            waited = client(platform, "wait", job_id)
            assert waited.returncode == 0, waited.stderr
            # Created and run by the member holding its group: its log says so.
            log = platform.home / "logs" / f"{running_job(platform, store, job_id)['name']}.log"
            assert f"job {job_id} (slow) created" in log.read_text()
        big = submit(platform, slow_job(folders[2], tasks=24, seconds=1.0))
        waited = client(platform, "wait", big)
        assert waited.returncode == 0, waited.stderr
        assert len(workers_of_job(store, big)) == 2
        logs = [
            (platform.home / "logs" / f"{c['name']}.log").read_text()
            for c in platform.state()["coordinators"]
        ]
        assert any("workers moved to" in log for log in logs)
        for job_id in (first, second, big):
            assert set(succeeded_attempts(store, job_id).values()) == {1}


def test_the_store_restarted_mid_job_costs_nothing(
    tmp_path: Path, private_server: PrivatePostgres, native_build: Path
) -> None:
    """PostgreSQL stopped for longer than the lease, then started again: the members retry,
    one serves again from what the store holds, and the job ends with every task done once."""
    store = private_server.url.replace("postgresql://", "postgresql+psycopg://")
    with two_coordinators(tmp_path / "home", store) as platform:
        job_id = submit(platform, slow_job(tmp_path))
        wait_for(lambda: len(succeeded_attempts(store)) >= 2, 120, "a first tasks to finish")
        private_server.stop()
        # The outage itself, not a wait for something: longer than the lease.
        time.sleep(LEASE + 2)
        private_server.start()
        waited = client(platform, "wait", job_id)
        assert waited.returncode == 0, waited.stderr
        assert set(succeeded_attempts(store)) == {f"t-{i}" for i in range(16)}
        assert set(succeeded_attempts(store).values()) == {1}
