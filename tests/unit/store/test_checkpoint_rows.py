"""The store's checkpoints, on SQLite and PostgreSQL: the latest few of a task kept, the time
noted on the task, the objects nobody names any more told, and writes refused without the
group's lock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.unit.store.test_store import _job
from xwch.store import jobs
from xwch.store.checkpoints import (
    CheckpointRow,
    drop_checkpoints_thd,
    load_checkpoints_thd,
    save_checkpoint_thd,
)
from xwch.store.database import make_engine
from xwch.store.group_locks import Fence, NotHeld, claim_thd, ensure_groups_thd
from xwch.store.records import OutputRow
from xwch.store.schema import migrate_thd

DIGESTS = {name: f"{i:064x}" for i, name in enumerate(["m1", "m2", "m3", "a", "b", "c", "out"])}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    migrate_thd(engine)
    _job(engine)
    yield engine
    engine.dispose()


def row(seq: int, manifest: str, *chunks: str, task: str = "t0") -> CheckpointRow:
    return CheckpointRow(
        job_id="j1",
        task_id=task,
        seq=seq,
        manifest=DIGESTS[manifest],
        size=10,
        content=100,
        chunks=tuple(DIGESTS[c] for c in chunks),
        taken=float(seq),
    )


def save(engine: sa.Engine, r: CheckpointRow, fence: Fence | None = None) -> list[str]:
    with engine.begin() as conn:
        return save_checkpoint_thd(conn, r, 2, fence, 0.0)


def kept(engine: sa.Engine) -> list[tuple[str, int]]:
    with engine.begin() as conn:
        return [(r.task_id, r.seq) for r in load_checkpoints_thd(conn, ["j1"])]


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
