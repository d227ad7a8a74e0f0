"""Jobs and workers in logical groups, in the store, on SQLite and PostgreSQL: each member
loads only its groups' part; groups' loads; workers moved under the mover's fences."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from xwch.protocol.states import TaskStatus
from xwch.protocol.wire import JOB_RUNNING
from xwch.store import jobs as job_queries
from xwch.store import nodes, placement
from xwch.store.database import make_engine
from xwch.store.group_locks import Fences, NotHeld, claim_thd, ensure_groups_thd
from xwch.store.records import JobRow, NewTask, WorkerRecord
from xwch.store.schema import group_locks, migrate_thd, workers

LEASE = 10.0


def job(job_id: str, group: str | None) -> JobRow:
    return JobRow(
        id=job_id,
        name=job_id,
        owner=1,
        state=JOB_RUNNING,
        priority=0,
        created=1.0,
        total=2,
        spec="{}",
        group=group,
    )


def worker(worker_id: str, group: str | None, slots: int = 2) -> WorkerRecord:
    return WorkerRecord(
        id=worker_id,
        token_id=1,
        name=worker_id,
        address="127.0.0.1",
        platform="linux-x86_64",
        cores=2,
        memory=2**30,
        slots=slots,
        performance=1.0,
        site=None,
        state="alive",
        registered=1.0,
        last_heard=1.0,
        group=group,
    )


def new_tasks(state: TaskStatus) -> list[NewTask]:
    return [NewTask(task_id=f"t{i}", position=i, state=state, cost=1.0, retries=0) for i in (0, 1)]


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    migrate_thd(engine)
    with engine.begin() as conn:
        # Written before groups were shared: in g1.
        job_queries.create_job_thd(conn, job("old", None), new_tasks(TaskStatus.READY))
        job_queries.create_job_thd(conn, job("j2", "g2"), new_tasks(TaskStatus.READY))
        job_queries.create_job_thd(conn, job("j3", "g3"), new_tasks(TaskStatus.BLOCKED))
        nodes.add_worker_thd(conn, worker("k-old", None))
        nodes.add_worker_thd(conn, worker("k2", "g2", slots=4))
    return engine


def test_a_member_loads_the_jobs_and_workers_of_its_groups_only(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert {r.row.id for r in job_queries.recover_running_jobs_thd(conn, ["g1"])} == {"old"}
        assert {r.row.id for r in job_queries.recover_running_jobs_thd(conn, ["g2", "g3"])} == {
            "j2",
            "j3",
        }
        assert len(job_queries.recover_running_jobs_thd(conn)) == 3
        assert [w.id for w in nodes.active_workers_thd(conn, ["g1"])] == ["k-old"]
        assert [w.group for w in nodes.active_workers_thd(conn, ["g2"])] == ["g2"]
        assert placement.job_group_thd(conn, "old") == "g1"
        assert placement.job_group_thd(conn, "j3") == "g3"
        assert placement.job_group_thd(conn, "nope") is None
        assert placement.worker_group_thd(conn, "k2") == "g2"
        assert placement.worker_group_thd(conn, "nope") is None


def test_loads_count_jobs_workers_slots_and_ready_tasks_by_group(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        loads = placement.group_loads_thd(conn, with_ready=True)
        without_ready = placement.group_loads_thd(conn)
    assert (loads.of("g1").jobs, loads.of("g1").workers, loads.of("g1").ready) == (1, 1, 2)
    assert (loads.of("g2").jobs, loads.of("g2").slots, loads.of("g2").ready) == (1, 4, 2)
    assert (loads.of("g3").jobs, loads.of("g3").workers, loads.of("g3").ready) == (1, 0, 0)
    assert without_ready.of("g2").ready == 0


def test_workers_move_under_the_movers_fences_or_not_at_all(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        ensure_groups_thd(conn, ["g1", "g2"])
        e1 = claim_thd(conn, "g1", "c-me", LEASE, 1000.0)
        e2 = claim_thd(conn, "g2", "c-me", LEASE, 1000.0)
    assert e1 is not None and e2 is not None
    fences = Fences.of("c-me", {"g1": e1, "g2": e2})
    with engine.begin() as conn:
        placement.move_workers_thd(conn, ["k-old"], "g3", fences, 1000.0)
        assert placement.worker_group_thd(conn, "k-old") == "g3"
    # g2 taken by another member: this member's fences no longer hold, whole.
    with engine.begin() as conn:
        conn.execute(group_locks.update().where(group_locks.c.id == "g2").values(expires=0.0))
        assert claim_thd(conn, "g2", "c-other", LEASE, 1000.0) is not None
    with pytest.raises(NotHeld), engine.begin() as conn:
        placement.move_workers_thd(conn, ["k2"], "g1", fences, 1000.0)
    with engine.begin() as conn:
        rows = conn.execute(sa.select(workers.c.id, workers.c.grp).order_by(workers.c.id)).all()
    assert [tuple(r) for r in rows] == [("k-old", "g3"), ("k2", "g2")]
