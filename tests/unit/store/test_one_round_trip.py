"""Group commits sent in one round trip (BEGIN, the statements, the fence and COMMIT together on
PostgreSQL): still all or nothing, in order, and refused whole by a fence that no longer
holds. On SQLite the same calls are plain transactions, and the same tests hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from twisted.internet.defer import DeferredList
from twisted.trial.unittest import TestCase

from tests.backends import postgres_or_skip, threaded_database
from xwch.store import jobs
from xwch.store.database import make_engine
from xwch.store.driver import one_round_trip
from xwch.store.group_locks import Fence, NotHeld, claim_thd, ensure_groups_thd
from xwch.store.records import AttemptUpdate, Change, JobRow, NewAttempt, NewTask, TaskUpdate
from xwch.store.schema import attempts, group_locks, migrate_thd, tasks

LEASE = 10.0
NOW = 1000.0


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    migrate_thd(engine)
    with engine.begin() as conn:
        ensure_groups_thd(conn, ["g1"])
        claim_thd(conn, "g1", "c-1", LEASE, NOW)
        row = JobRow("j1", "demo", 1, "running", 0, 10.0, 2, "{}")
        new = [NewTask(f"t{i}", i, "ready", 1.0, 0) for i in range(2)]
        jobs.create_job_thd(conn, row, new)
    yield engine
    engine.dispose()


HELD = Fence("g1", "c-1", 1)
STALE = Fence("g1", "c-1", 0)


def start(task: str, attempt: str) -> Change:
    return Change(
        new_attempts=[NewAttempt(attempt, "j1", task, 1, "k1", "host", 11.0)],
        task_updates=[TaskUpdate("j1", (task,), {"state": "running", "started": 11.0})],
    )


def finish(task: str, attempt: str) -> Change:
    return Change(
        attempt_updates=[AttemptUpdate(attempt, "succeeded", 12.0, exit_code=0)],
        task_updates=[TaskUpdate("j1", (task,), {"state": "done", "ended": 12.0})],
    )


def states(engine: sa.Engine) -> dict[str, str]:
    with engine.begin() as conn:
        return dict(conn.execute(sa.select(tasks.c.task_id, tasks.c.state)).all())  # type: ignore[arg-type]


def attempt_count(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        return len(conn.execute(sa.select(attempts.c.id)).all())


def test_changes_sent_together_land_in_order(engine: sa.Engine) -> None:
    """A task started and finished in one group commit ends done, its attempt succeeded."""
    with one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
        jobs.apply_change_thd(conn, finish("t0", "a1"), HELD, NOW)
    assert states(engine) == {"t0": "done", "t1": "ready"}
    with engine.begin() as conn:
        assert conn.execute(sa.select(attempts.c.state)).scalar_one() == "succeeded"


def test_a_failed_statement_drops_the_whole_group(engine: sa.Engine) -> None:
    """A change breaking a rule takes the changes sent before it in the group with it."""
    with pytest.raises(sa.exc.IntegrityError), one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
        jobs.apply_change_thd(conn, start("t1", "a1"), HELD, NOW)  # the same attempt id
    assert states(engine) == {"t0": "ready", "t1": "ready"}
    assert attempt_count(engine) == 0


def test_a_stale_fence_refuses_the_whole_group(engine: sa.Engine) -> None:
    """Changes made under an epoch the member no longer holds are refused, all of them."""
    with pytest.raises(NotHeld, match="g1"), one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), STALE, NOW)
        jobs.apply_change_thd(conn, start("t1", "a2"), STALE, NOW)
    assert states(engine) == {"t0": "ready", "t1": "ready"}
    assert attempt_count(engine) == 0


def test_a_stale_fence_is_told_before_a_broken_rule(engine: sa.Engine) -> None:
    """A change that both comes from a stale holder and breaks a rule is refused as stale:
    what its member must learn is that it lost the group."""
    with pytest.raises(NotHeld), one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), STALE, NOW)
        jobs.apply_change_thd(conn, start("t1", "a1"), STALE, NOW)


def test_an_exception_inside_commits_nothing(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
        raise RuntimeError("a bug after the statements were sent")
    assert states(engine) == {"t0": "ready", "t1": "ready"}


def test_the_connection_is_transactional_again_afterwards(engine: sa.Engine) -> None:
    """The next user of the pooled connection gets an ordinary transaction (all or nothing),
    whether the group committed or failed."""
    with one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
    with pytest.raises(NotHeld), one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t1", "a2"), STALE, NOW)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(tasks.update().values(state="cancelled"))
        raise RuntimeError("rolled back")
    assert states(engine) == {"t0": "running", "t1": "ready"}


def test_no_member_takes_the_group_while_a_change_is_written(engine: sa.Engine) -> None:
    """The fence sent with a change locks the group's row until the change commits (on
    PostgreSQL; SQLite has one coordinator)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("one coordinator per SQLite store")
    with one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("SELECT 1").fetchone()  # waits for the answers of all sent before
        with engine.connect() as other, pytest.raises(sa.exc.OperationalError, match="lock"):
            other.execute(
                sa.select(group_locks.c.id)
                .where(group_locks.c.id == "g1")
                .with_for_update(nowait=True)
            )


def test_a_connection_the_server_ends_fails_its_group_alone(engine: sa.Engine) -> None:
    """The server ending the connection mid-group (a restart) fails that group; the next one
    goes through on a new connection."""
    if engine.dialect.name != "postgresql":
        pytest.skip("no server to end the connection")
    with pytest.raises(sa.exc.OperationalError), one_round_trip(engine) as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        pid = driver.info.backend_pid
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        jobs.apply_change_thd(conn, start("t0", "a1"), HELD, NOW)
    with one_round_trip(engine) as conn:
        jobs.apply_change_thd(conn, start("t1", "a2"), HELD, NOW)
    assert states(engine) == {"t0": "ready", "t1": "running"}


class _DatabaseGroupTests:
    """Through the writer thread: changes asked for in one turn go as one group commit."""

    backend = "sqlite"

    def setUp(self) -> None:
        self.db = threaded_database(self, self.backend)  # type: ignore[arg-type]
        prepare = engine.__wrapped__(self.db.url)  # type: ignore[attr-defined]
        next(prepare).dispose()
        self.db.start()
        self.commits = 0

        def counted(_conn: object) -> None:
            self.commits += 1

        sa.event.listen(self.db.engine, "commit", counted)

    async def test_changes_asked_together_commit_together_in_order(self) -> None:
        writes = [
            self.db.write(jobs.apply_change_thd, start("t0", "a1"), HELD, NOW),
            self.db.write(jobs.apply_change_thd, finish("t0", "a1"), HELD, NOW),
            self.db.write(jobs.apply_change_thd, start("t1", "a2"), HELD, NOW),
        ]
        await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(self.commits, 1)
        test.assertEqual(states(self.db.engine), {"t0": "done", "t1": "running"})

    async def test_a_refused_fence_drops_every_change_of_the_group(self) -> None:
        writes = [
            self.db.write(jobs.apply_change_thd, start("t0", "a1"), STALE, NOW),
            self.db.write(jobs.apply_change_thd, start("t1", "a2"), STALE, NOW),
        ]
        results = await DeferredList(writes, consumeErrors=True)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual([f.check(NotHeld) for _ok, f in results], [NotHeld, NotHeld])
        test.assertEqual(states(self.db.engine), {"t0": "ready", "t1": "ready"})
        test.assertEqual(attempt_count(self.db.engine), 0)


class SQLiteDatabaseGroupTests(_DatabaseGroupTests, TestCase):
    backend = "sqlite"


class PostgresDatabaseGroupTests(_DatabaseGroupTests, TestCase):
    backend = "postgresql"

    def setUp(self) -> None:
        postgres_or_skip()
        super().setUp()
