"""Locality with real processes: two sites, shards at each, every map runs next to its shard."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    NATIVE,
    api_get,
    client,
    job_file,
    running_platform,
    tasks_of,
)
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration

# Big enough that fetching one from the other site (at the default 10 MB/s between sites) takes
# longer than waiting for the two maps of its own site: nothing should cross.
SHARD_BYTES = 24 << 20
SITE_OF_SHARD = {0: "site-1", 1: "site-1", 2: "site-2", 3: "site-2"}


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, native_build: Path
) -> Iterator[LocalPlatformProcess]:
    # warehouse-1 and worker-1 at site-1, warehouse-2 and worker-2 at site-2; one copy of
    # each object, so data stays where it was put.
    with running_platform(
        tmp_path_factory.mktemp("xwch-home"),
        workers=2,
        slots=1,
        warehouses=2,
        extra=["--sites", "2", "--replicas", "1"],
    ) as p:
        yield p


def _shards(folder: Path) -> list[Path]:
    words = [f"w{n}" for n in range(500)]
    rng = random.Random(4)
    paths = []
    for n in range(len(SITE_OF_SHARD)):
        text = " ".join(rng.choice(words) for _ in range(SHARD_BYTES // 4)).encode()[:SHARD_BYTES]
        path = folder / f"shard-{n}.txt"
        path.write_bytes(text)
        paths.append(path)
    return paths


def _job(name: str, shards: dict[int, Path], maps: bool) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [
        {
            "id": f"map-{n}",
            "binary": "map",
            "args": ["shard.txt", "counts.tsv"],
            "inputs": {"shard.txt": f"shard-{n}"},
            "outputs": ["counts.tsv"],
        }
        for n in shards
    ]
    if not maps:
        # Staging only: the files are uploaded with the job; nobody reads them.
        tasks = [{"id": "stage", "binary": "noop", "args": ["out.txt", "staged"]}]
    return {
        "name": name,
        "binaries": {"map": str(NATIVE / "wc-map"), "noop": str(NATIVE / "noop")},
        "files": {f"shard-{n}": str(path) for n, path in shards.items()},
        "tasks": tasks,
    }


def test_each_map_runs_at_the_site_of_its_shard(
    platform: LocalPlatformProcess, tmp_path: Path
) -> None:
    shards = _shards(tmp_path)
    for site in ("site-1", "site-2"):
        here = {n: shards[n] for n, s in SITE_OF_SHARD.items() if s == site}
        staged = client(
            platform,
            "submit",
            str(job_file(tmp_path, _job(f"stage-{site}", here, maps=False), f"{site}.json")),
            "--site",
            site,
            "--wait",
            "-o",
            str(tmp_path / f"staged-{site}"),
        )
        assert staged.returncode == 0, staged.stderr
    for n, path in enumerate(shards):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        where = api_get(platform, f"/objects/{digest}")
        assert [w["site"] for w in where["warehouses"]] == [SITE_OF_SHARD[n]]

    everything = _job("wordcount", dict(enumerate(shards)), maps=True)
    done = client(
        platform,
        "submit",
        str(job_file(tmp_path, everything)),
        "--wait",
        "-o",
        str(tmp_path / "results"),
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    workers = {w["name"]: w for w in api_get(platform, "/workers")["workers"]}
    site_of_worker = {name: w["site"] for name, w in workers.items()}
    ran = {task_id: t["worker"] for task_id, t in tasks_of(platform, job_id).items()}
    assert {task: site_of_worker[worker] for task, worker in ran.items()} == {
        f"map-{n}": site for n, site in SITE_OF_SHARD.items()
    }
