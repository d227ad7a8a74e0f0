"""The store's queries, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from xwch.store import jobs, nodes, tokens
from xwch.store.database import make_engine
from xwch.store.records import (
    AttemptUpdate,
    Change,
    JobRow,
    JobUpdate,
    NewAttempt,
    NewTask,
    OutputRow,
    TaskUpdate,
    WarehouseRecord,
    WorkerRecord,
)
from xwch.store.schema import (
    SCHEMA_VERSION,
    SchemaTooNew,
    current_version_thd,
    migrate_thd,
    schema_version,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    migrate_thd(engine)
    yield engine
    engine.dispose()


def _job(engine: sa.Engine, job_id: str = "j1", n: int = 3, created: float = 10.0) -> None:
    row = JobRow(
        id=job_id,
        name="demo",
        owner=1,
        state="running",
        priority=0,
        created=created,
        total=n,
        spec="{}",
    )
    new = [
        NewTask(
            task_id=f"t{i}", position=i, state="ready" if i == 0 else "blocked", cost=1.0, retries=3
        )
        for i in range(n)
    ]
    with engine.begin() as conn:
        jobs.create_job_thd(conn, row, new)


def test_migration_is_recorded_and_idempotent(engine: sa.Engine) -> None:
    """A coordinator restarted on an existing store keeps its data and schema version."""
    _job(engine)
    assert migrate_thd(engine) == SCHEMA_VERSION
    with engine.begin() as conn:
        assert current_version_thd(conn) == SCHEMA_VERSION
        assert jobs.job_summary_thd(conn, "j1") is not None


def test_a_version_1_store_gains_speculative_attempts(engine: sa.Engine) -> None:
    """Attempts written before speculation existed are plain attempts after the migration."""
    _job(engine, n=1)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE attempts DROP COLUMN speculative"))
        conn.execute(schema_version.update().values(version=1))
        conn.execute(
            sa.text(
                "INSERT INTO attempts (id, job_id, task_id, number, worker_id, state, started, "
                "stdout, stderr) VALUES ('a1', 'j1', 't0', 1, 'k1', 'running', 1.0, '', '')"
            )
        )
    assert migrate_thd(engine) == 1
    with engine.begin() as conn:
        recovered = jobs.recover_job_thd(conn, "j1")
    assert recovered is not None
    [attempt] = recovered.running
    assert attempt.id == "a1" and attempt.speculative is False


def test_a_version_2_store_gains_inline_objects(engine: sa.Engine) -> None:
    """A store from before inline objects gets their table, and keeps each object once."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE inline_objects"))
        conn.execute(schema_version.update().values(version=2))
    assert migrate_thd(engine) == 2
    with engine.begin() as conn:
        nodes.add_inline_objects_thd(conn, {"d" * 64: b"42\n"})
    # The same object again (a speculative duplicate's result, say) changes nothing.
    with engine.begin() as conn:
        nodes.add_inline_objects_thd(conn, {"d" * 64: b"42\n", "e" * 64: b""})
    with engine.begin() as conn:
        assert nodes.all_inline_objects_thd(conn) == {"d" * 64: b"42\n", "e" * 64: b""}


def test_newer_schema_is_refused(engine: sa.Engine) -> None:
    """An older coordinator refuses a store written by a newer one instead of damaging it."""
    with engine.begin() as conn:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(SchemaTooNew):
        migrate_thd(engine)


def test_tokens_are_stored_hashed_and_found_by_role(engine: sa.Engine) -> None:
    """A created token authenticates with its role; the store never holds the token itself."""
    with engine.begin() as conn:
        token = tokens.create_token_thd(conn, "worker", "lab", 1.0)
        record = tokens.find_token_thd(conn, token)
        assert record is not None and record.role == "worker" and record.name == "lab"
        assert tokens.find_token_thd(conn, token + "x") is None
        stored = conn.execute(sa.text("select digest from tokens")).scalars().all()
    assert token not in stored and tokens.token_digest(token) in stored


def test_unknown_role_is_refused(engine: sa.Engine) -> None:
    """Only client, worker and warehouse tokens exist."""
    with engine.begin() as conn, pytest.raises(ValueError, match="unknown role"):
        tokens.create_token_thd(conn, "admin", "x", 1.0)


def test_job_counts_follow_changes(engine: sa.Engine) -> None:
    """Status counts tasks by state as attempts start and finish."""
    _job(engine)
    change = Change(
        new_attempts=[NewAttempt("a1", "j1", "t0", 1, "k1", "host", 11.0)],
        task_updates=[
            TaskUpdate(
                "j1",
                ("t0",),
                {"state": "running", "attempts": 1, "worker": "host", "started": 11.0},
            )
        ],
    )
    with engine.begin() as conn:
        jobs.apply_change_thd(conn, change)
        summary = jobs.job_summary_thd(conn, "j1")
    assert summary is not None
    assert summary.counts["running"] == 1 and summary.counts["blocked"] == 2 and summary.total == 3
    done = Change(
        attempt_updates=[
            AttemptUpdate("a1", "succeeded", 12.0, exit_code=0, stdout="hi", stderr="")
        ],
        task_updates=[
            TaskUpdate("j1", ("t0",), {"state": "done", "ended": 12.0}),
            TaskUpdate("j1", ("t1", "t2"), {"state": "ready"}),
        ],
        outputs=[OutputRow("j1", "t0", "out.txt", "ab" * 32, 5)],
    )
    with engine.begin() as conn:
        jobs.apply_change_thd(conn, done)
        summary = jobs.job_summary_thd(conn, "j1")
        rows = jobs.list_tasks_thd(conn, "j1")
        log = jobs.attempt_log_thd(conn, "j1", "t0", None)
        outputs = jobs.outputs_thd(conn, "j1")
    assert summary is not None and summary.counts["done"] == 1 and summary.counts["ready"] == 2
    assert [r.id for r in rows] == ["t0", "t1", "t2"] and rows[0].worker == "host"
    assert log is not None and log.stdout == "hi" and log.exit_code == 0
    assert outputs == [OutputRow("j1", "t0", "out.txt", "ab" * 32, 5)]


def test_a_task_of_a_large_new_job_is_updated_through_its_key(engine: sa.Engine) -> None:
    """Updating one task of a just-submitted large job reads that task's row, not the whole
    job's (PostgreSQL's planner, with statistics that do not know the job, chose the index of
    tasks by job and state: every task's update read the job's every row)."""
    _job(engine, "earlier", n=5)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE tasks")  # statistics from before the large job
    _job(engine, "large", n=2000)
    update = "UPDATE tasks SET state = 'running' WHERE job_id = 'large' AND task_id = 't5'"
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            plan = " ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + update))
            assert "tasks_pkey" in plan, plan
        else:
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + update)
            )
            assert "task_id=?" in plan, plan


def test_a_failed_change_leaves_nothing_half_written(engine: sa.Engine) -> None:
    """A change that breaks a rule midway is rolled back whole."""
    _job(engine)
    bad = Change(
        task_updates=[TaskUpdate("j1", ("t0",), {"state": "running"})],
        new_attempts=[
            NewAttempt("a1", "j1", "t0", 1, "k1", "host", 11.0),
            NewAttempt("a2", "j1", "t0", 1, "k1", "host", 11.0),  # same number: refused
        ],
    )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        jobs.apply_change_thd(conn, bad)
    with engine.begin() as conn:
        summary = jobs.job_summary_thd(conn, "j1")
    assert summary is not None and summary.counts["running"] == 0


def test_jobs_listed_newest_first_and_recovered_while_running(engine: sa.Engine) -> None:
    """Listings show the newest job first; a restart resumes only the jobs still running."""
    _job(engine, "old", created=1.0)
    _job(engine, "new", created=2.0)
    with engine.begin() as conn:
        jobs.apply_change_thd(
            conn,
            Change(
                new_attempts=[NewAttempt("a1", "new", "t0", 1, "k1", "host", 3.0)],
                job_updates=[JobUpdate("old", "done", 4.0, None)],
            ),
        )
        listed = [j.id for j in jobs.list_jobs_thd(conn)]
        recovered = jobs.recover_running_jobs_thd(conn)
    assert listed == ["new", "old"]
    assert [r.row.id for r in recovered] == ["new"]
    assert [a.id for a in recovered[0].running] == ["a1"]
    assert len(recovered[0].tasks) == 3


def test_workers_and_warehouses(engine: sa.Engine) -> None:
    """Workers are listed with their facts; a warehouse registering again keeps its id."""
    worker = WorkerRecord(
        "k1", 1, "host", "127.0.0.1", "linux-x86_64", 2, 2**30, 2, 1.0, None, "alive", 1.0, 1.0
    )
    first = WarehouseRecord("w1", "http://127.0.0.1:1", "lab", 100, 50, 1.0, 1.0)
    again = WarehouseRecord("w2", "http://127.0.0.1:1", "lab", 100, 40, 2.0, 2.0)
    with engine.begin() as conn:
        nodes.add_worker_thd(conn, worker)
        nodes.touch_workers_thd(conn, {"k1": 9.0})
        # Tasks done are counted per worker as results are taken, a change at a time.
        jobs.apply_change_thd(conn, Change(tasks_done_by_worker={"k1": 2}))
        jobs.apply_change_thd(conn, Change(tasks_done_by_worker={"k1": 1, "gone": 1}))
        nodes.upsert_warehouse_thd(conn, first)
        stored = nodes.upsert_warehouse_thd(conn, again)
        nodes.add_locations_thd(conn, "w1", [("cd" * 32, 7)])
        nodes.add_locations_thd(conn, "w1", [("cd" * 32, 7)])
        listed = nodes.list_workers_thd(conn)
        warehouses = nodes.list_warehouses_thd(conn)
        locations = nodes.all_locations_thd(conn)
    assert listed[0].last_heard == 9.0 and listed[0].memory == 2**30
    assert listed[0].tasks_done == 3
    assert stored.id == "w1" and [w.free for w in warehouses] == [40]
    assert locations == [("cd" * 32, "w1", 7)]
