"""Workers' states as real processes show them: xwch-local's workers keep out of the
volunteer's own worker.toml, and a suspended worker is shown suspended, with its reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    NATIVE,
    client,
    client_json,
    hours_away,
    job_file,
    running_platform,
    wait_for,
)
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration

# How long a worker may take to suspend or resume (it re-reads worker.toml every 3 s).
WAITING_SECONDS = 60


@pytest.fixture(scope="module")
def volunteer_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HOME whose ~/.xwch/worker.toml (as `xwch-worker install` writes it) would suspend
    any worker that read it, with xwch-local run in that same ~/.xwch."""
    home = tmp_path_factory.mktemp("volunteer")
    (home / ".xwch").mkdir()
    (home / ".xwch" / "worker.toml").write_text(hours_away())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def platform(volunteer_home: Path, native_build: Path) -> Iterator[LocalPlatformProcess]:
    with running_platform(volunteer_home / ".xwch", workers=1, slots=1, warehouses=1) as p:
        yield p


def quick_job(folder: Path, name: str) -> Path:
    return job_file(
        folder,
        {
            "name": name,
            "binaries": {"noop": str(NATIVE / "noop")},
            "tasks": [{"id": "t-{i}", "foreach": {"i": {"range": [0, 2]}}, "binary": "noop"}],
        },
        name=f"{name}.json",
    )


def worker_row(platform: LocalPlatformProcess) -> dict[str, object]:
    [row] = client_json(platform, "workers")["workers"]
    return dict(row)


def test_local_workers_never_read_the_volunteers_worker_toml(
    platform: LocalPlatformProcess, volunteer_home: Path, tmp_path: Path
) -> None:
    """With ~/.xwch/worker.toml saying "not now", xwch-local's worker computes all the same
    (it has its own XWCH_HOME) and leaves that file as it was."""
    toml = volunteer_home / ".xwch" / "worker.toml"
    before = toml.read_text()
    # A worker reading it would have registered suspended (its governor checks first).
    row = worker_row(platform)
    assert (row["state"], row["reason"]) == ("alive", None)
    done = client(platform, "submit", str(quick_job(tmp_path, "isolated")), "--wait")
    assert done.returncode == 0, done.stderr
    assert toml.read_text() == before
    assert not (platform.home / "worker-1" / "worker.toml").exists()


def test_a_suspended_worker_is_shown_suspended_with_its_reason(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    """A local worker's own worker.toml suspends it: `workers` shows it suspended and why, so
    does `status` of a job left waiting; once the preference goes, the job runs to its end."""
    own = platform.home / "worker-1" / "worker.toml"
    own.write_text(hours_away())
    try:
        row = wait_for(
            lambda: (r := worker_row(platform))["state"] == "suspended" and r,
            WAITING_SECONDS,
            "the worker shown suspended",
        )
        assert str(row["reason"]).startswith("outside the allowed hours")
        table = client(platform, "workers").stdout
        assert "suspended" in table and "outside the allowed hours" in table
        submitted = client(platform, "submit", str(quick_job(tmp_path, "held")))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.splitlines()[0]
        status = client(platform, "status", job_id).stdout
        assert "WORKERS   1/1 workers suspended: outside the allowed hours" in status
    finally:
        own.unlink()
    wait_for(
        lambda: worker_row(platform)["state"] == "alive", WAITING_SECONDS, "the worker resumed"
    )
    done = client(platform, "wait", job_id)
    assert done.returncode == 0, done.stderr
