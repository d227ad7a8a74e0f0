"""The store's checkpoints, on SQLite and PostgreSQL: the latest few of each lineage of a task
kept, the time noted on the task, the objects nobody names any more told, writes refused
without the group's lock, and a version 7 store brought to lineages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.unit.store.test_store import _job
from xwch.store import jobs
from xwch.store.checkpoints import (
    CheckpointRow,
    LineageWorker,
    attempt_worker_thd,
    drop_checkpoints_thd,
    drop_lineage_thd,
    load_checkpoints_thd,
    load_lineage_workers_thd,
    save_checkpoint_thd,
    unnamed_objects_thd,
)
from xwch.store.database import make_engine
from xwch.store.group_locks import Fence, NotHeld, claim_thd, ensure_groups_thd
from xwch.store.records import Change, NewAttempt, OutputRow
from xwch.store.schema import SCHEMA_VERSION, migrate_thd, schema_version

DIGESTS = {name: f"{i:064x}" for i, name in enumerate(["m1", "m2", "m3", "a", "b", "c", "out"])}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    migrate_thd(engine)
    _job(engine)
    yield engine
    engine.dispose()


def row(seq: int, manifest: str, *chunks: str, task: str = "t0", lineage: int = 0) -> CheckpointRow:
    return CheckpointRow(
        job_id="j1",
        task_id=task,
        seq=seq,
        manifest=DIGESTS[manifest],
        size=10,
        content=100,
        chunks=tuple(DIGESTS[c] for c in chunks),
        taken=float(seq),
        lineage=lineage,
    )


def save(engine: sa.Engine, r: CheckpointRow, fence: Fence | None = None) -> list[str]:
    with engine.begin() as conn:
        return save_checkpoint_thd(conn, r, 2, fence, 0.0)


def kept(engine: sa.Engine) -> list[tuple[str, int]]:
    with engine.begin() as conn:
        return [(r.task_id, r.seq) for r in load_checkpoints_thd(conn, ["j1"])]


def lineages(engine: sa.Engine) -> list[tuple[int, int]]:
    with engine.begin() as conn:
        return [(r.lineage, r.seq) for r in load_checkpoints_thd(conn, ["j1"])]


def test_the_two_latest_are_kept_and_the_unnamed_objects_told(engine: sa.Engine) -> None:
    assert save(engine, row(1, "m1", "a", "b")) == []
    assert save(engine, row(2, "m2", "a", "c")) == []
    # The first goes: its manifest and "b" are named by nothing else; "a" still is.
    assert save(engine, row(3, "m3", "a", "c")) == sorted([DIGESTS["m1"], DIGESTS["b"]])
    assert kept(engine) == [("t0", 2), ("t0", 3)]
    with engine.begin() as conn:
        [task, *_] = jobs.list_tasks_thd(conn, "j1")
    assert task.checkpointed == 3.0


def test_dropping_a_tasks_checkpoints_spares_what_outputs_and_others_name(
    engine: sa.Engine,
) -> None:
    save(engine, row(1, "m1", "a", "out"))
    save(engine, row(1, "m2", "a", task="t1"))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(jobs.outputs).values(**vars(OutputRow("j1", "t2", "o", DIGESTS["out"], 3)))
        )
        unused = drop_checkpoints_thd(conn, "j1", ["t0"])
    assert unused == [DIGESTS["m1"]]
    assert kept(engine) == [("t1", 1)]
    with engine.begin() as conn:
        assert drop_checkpoints_thd(conn, "j1", None) == sorted([DIGESTS["m2"], DIGESTS["a"]])
    assert kept(engine) == []


def test_a_member_without_the_group_lock_records_nothing(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        ensure_groups_thd(conn, ["g1"])
        epoch = claim_thd(conn, "g1", "c-1", 10.0, 0.0)
    assert epoch is not None
    with pytest.raises(NotHeld):
        save(engine, row(1, "m1", "a"), Fence("g1", "c-1", epoch + 1))
    assert kept(engine) == []
    save(engine, row(1, "m1", "a"), Fence("g1", "c-1", epoch))
    assert kept(engine) == [("t0", 1)]


def test_each_lineage_keeps_its_own_latest(engine: sa.Engine) -> None:
    """Replicas' saves interleave: each lineage keeps its two latest, whatever the other saved
    meanwhile."""
    save(engine, row(1, "m1", "a", lineage=1))
    save(engine, row(2, "m2", "b", lineage=2))
    save(engine, row(3, "m3", "a", lineage=1))
    assert save(engine, row(4, "m3", "c", lineage=2)) == []
    assert lineages(engine) == [(1, 1), (2, 2), (1, 3), (2, 4)]
    # The third of lineage 1 supersedes its first; "a" is still named by its second.
    assert save(engine, row(5, "m2", "a", lineage=1)) == [DIGESTS["m1"]]
    assert lineages(engine) == [(2, 2), (1, 3), (2, 4), (1, 5)]
    with engine.begin() as conn:
        [task, *_] = jobs.list_tasks_thd(conn, "j1")
    assert task.checkpointed == 5.0


def test_a_lineage_over_is_dropped_alone(engine: sa.Engine) -> None:
    save(engine, row(1, "m1", "a", "b", lineage=1))
    save(engine, row(2, "m2", "b", lineage=2))
    with engine.begin() as conn:
        assert drop_lineage_thd(conn, "j1", "t0", 1) == sorted([DIGESTS["m1"], DIGESTS["a"]])
    assert lineages(engine) == [(2, 2)]


def test_who_ran_each_lineage_is_read_back(engine: sa.Engine) -> None:
    change = Change(
        new_attempts=[
            NewAttempt("a1", "j1", "t0", 1, "k1", "w1", 1.0, lineage=1),
            NewAttempt("a2", "j1", "t0", 2, "k2", "w2", 1.0, lineage=2),
            NewAttempt("a3", "j1", "t0", 3, "k3", "w3", 2.0, lineage=1),
            NewAttempt("a4", "j1", "t1", 1, "k1", "w1", 2.0),
        ]
    )
    with engine.begin() as conn:
        jobs.apply_change_thd(conn, change)
        found = load_lineage_workers_thd(conn, ["j1"])
        assert attempt_worker_thd(conn, "a3") == "k3"
        assert attempt_worker_thd(conn, "nope") is None
    assert sorted(found, key=lambda w: (w.lineage, w.worker_id)) == [
        LineageWorker("j1", "t0", 1, "k1"),
        LineageWorker("j1", "t0", 1, "k3"),
        LineageWorker("j1", "t0", 2, "k2"),
    ]


def test_unnamed_objects_spare_checkpoints_and_outputs(engine: sa.Engine) -> None:
    save(engine, row(1, "m1", "a"))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(jobs.outputs).values(**vars(OutputRow("j1", "t2", "o", DIGESTS["out"], 3)))
        )
        names = [DIGESTS[n] for n in ("m1", "a", "b", "out", "c")]
        assert unnamed_objects_thd(conn, names) == sorted([DIGESTS["b"], DIGESTS["c"]])


def test_a_version_7_store_gains_lineages(engine: sa.Engine) -> None:
    """A store written before lineages keeps its checkpoints and attempts, as lineage 0: the
    one lineage of a task not replicated."""
    save(engine, row(1, "m1", "a"))
    with engine.begin() as conn:
        jobs.apply_change_thd(
            conn, Change(new_attempts=[NewAttempt("a1", "j1", "t0", 1, "k1", "w1", 1.0)])
        )
    # Back to version 7: the lineage columns as they were not.
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE attempts DROP COLUMN lineage"))
        conn.execute(sa.text("ALTER TABLE checkpoints DROP COLUMN lineage"))
        conn.execute(schema_version.update().values(version=7))
    assert migrate_thd(engine) == 7
    with engine.begin() as conn:
        [old] = load_checkpoints_thd(conn, ["j1"])
        recovered = jobs.recover_job_thd(conn, "j1")
    assert (old.seq, old.lineage, old.manifest) == (1, 0, DIGESTS["m1"])
    assert recovered is not None
    [attempt] = recovered.running
    assert (attempt.id, attempt.lineage) == ("a1", 0)
    save(engine, row(2, "m2", "b", lineage=1))
    assert lineages(engine) == [(0, 1), (1, 2)]
    with engine.begin() as conn:
        assert conn.execute(sa.select(schema_version.c.version)).scalar() == SCHEMA_VERSION
