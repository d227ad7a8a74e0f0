"""Queries about jobs, tasks, attempts and outputs."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from xwch.protocol.client import AttemptLog, JobSummary, TaskInfo
from xwch.protocol.states import AttemptStatus, TaskStatus
from xwch.protocol.wire import JOB_RUNNING
from xwch.store.database import register_merge, register_pipelined
from xwch.store.driver import execute_plain, pipelined
from xwch.store.group_locks import Fencing
from xwch.store.nodes import add_inline_objects_thd
from xwch.store.placement import in_groups
from xwch.store.records import (
    AttemptUpdate,
    Change,
    JobRow,
    NewTask,
    OutputRow,
    RecoveredAttempt,
    RecoveredJob,
    RecoveredTask,
)
from xwch.store.schema import attempts, jobs, outputs, tasks, workers

# Rows per INSERT statement: large jobs go in batches that every backend accepts.
INSERT_BATCH = 5000

# From how many tasks a new job has PostgreSQL's planner statistics of ``tasks`` taken again
# (see create_job_thd). ANALYZE reads a sample of at most 30,000 rows whatever the table's size
# (a few ms for 2,000 tasks); a job with the wrong plan reads every row of the job on each
# update of one task, so below a few hundred tasks that costs less than the ANALYZE.
ANALYZE_FROM = 200


def create_job_thd(
    conn: sa.Connection,
    job: JobRow,
    new_tasks: Sequence[NewTask],
    fence: Fencing | None = None,
    now: float = 0.0,
) -> None:
    """Store a new job and its tasks; refused (NotHeld) unless ``fence`` still holds."""
    if fence is not None:
        fence.check_thd(conn, now)
    conn.execute(
        jobs.insert().values(
            id=job.id,
            name=job.name,
            owner=job.owner,
            state=job.state,
            priority=job.priority,
            created=job.created,
            ended=job.ended,
            message=job.message,
            spec=job.spec,
            total=job.total,
            grp=job.group,
        )
    )
    rows = [
        {
            "job_id": job.id,
            "task_id": t.task_id,
            "position": t.position,
            "state": t.state,
            "cost": t.cost,
            "retries": t.retries,
            "failures": 0,
            "attempts": 0,
        }
        for t in new_tasks
    ]
    for start in range(0, len(rows), INSERT_BATCH):
        conn.execute(tasks.insert(), rows[start : start + INSERT_BATCH])
    if conn.dialect.name == "postgresql" and len(rows) >= ANALYZE_FROM:
        # Statistics that do not know the new job (a fresh table has none) estimate it at one
        # row, and the planner then updates a task through the smaller index tasks_by_state,
        # reading the whole job to find it: on W1's 2,000 tasks, 1,900 rows read per task's
        # update and half the server's CPU (0.7 ms a task; 0.37 after). ANALYZE in this
        # transaction counts the rows it inserted, and the next statements are planned again.
        # SQLite picks the primary key anyway.
        conn.exec_driver_sql("ANALYZE tasks")


def apply_change_thd(
    conn: sa.Connection, change: Change, fence: Fencing | None = None, now: float = 0.0
) -> None:
    """Write one decision of the tasks' manager, all or nothing.

    With several coordinators on one store, ``fence`` is the group lock the decision was made
    under: checked in the same transaction, a holder that lost it has its change refused
    (:class:`~xwch.store.group_locks.NotHeld`) and nothing is written.
    """
    with pipelined(conn):
        # Inside the pipeline, the check goes with the statements, in the same round trip.
        if fence is not None:
            fence.check_thd(conn, now)
        _apply_thd(conn, change)


def _apply_thd(conn: sa.Connection, change: Change) -> None:
    if change.new_attempts:
        execute_plain(
            conn,
            _ATTEMPTS_INSERT,
            # Every column named: the statement binds them all.
            [
                {
                    "id": a.id,
                    "job_id": a.job_id,
                    "task_id": a.task_id,
                    "number": a.number,
                    "worker_id": a.worker_id,
                    "state": AttemptStatus.RUNNING,
                    "started": a.started,
                    "ended": None,
                    "exit_code": None,
                    "error": None,
                    "stdout": "",
                    "stderr": "",
                    "speculative": a.speculative,
                    "lineage": a.lineage,
                }
                for a in change.new_attempts
            ],
        )
    _run_grouped(conn, [_attempt_row(u) for u in change.attempt_updates], _attempt_update)
    single: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for task_update in change.task_updates:
        ids = list(task_update.task_ids)
        if len(ids) == 1:
            single.append(_task_row(task_update.job_id, ids[0], task_update.values))
            continue
        # Many tasks, one set of values (a job's start, cancel or retry): IN lists, in order.
        _run_grouped(conn, single, _task_update)
        single = []
        for start in range(0, len(ids), INSERT_BATCH):
            conn.execute(
                tasks.update()
                .where(tasks.c.job_id == task_update.job_id)
                .where(tasks.c.task_id.in_(ids[start : start + INSERT_BATCH]))
                .values(**task_update.values)
            )
    _run_grouped(conn, single, _task_update)
    for job_id, task_id in change.removed_outputs:
        conn.execute(
            outputs.delete().where(outputs.c.job_id == job_id, outputs.c.task_id == task_id)
        )
    if change.outputs:
        execute_plain(conn, _OUTPUTS_INSERT, [_output_values(o) for o in change.outputs])
    if change.inline_objects:
        add_inline_objects_thd(conn, change.inline_objects)
    for job_update in change.job_updates:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_update.job_id)
            .values(state=job_update.state, ended=job_update.ended, message=job_update.message)
        )
    if change.tasks_done_by_worker:
        execute_plain(
            conn,
            _WORKER_TASKS_DONE,
            # In the order of the ids, as every writer of workers' rows: two members writing
            # the same rows (a worker just moved between them) must not lock them crosswise.
            [{"b_id": w, "b_count": n} for w, n in sorted(change.tasks_done_by_worker.items())],
        )


def merge_change_writes(calls: Sequence[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """Several ``apply_change_thd`` calls queued together as one call (one statement per kind
    of row rather than one per change: on PostgreSQL each is a round trip), or None when they
    cannot be: under different fences, or in an order that merging would change."""
    merged = Change()
    fences = set()
    latest = 0.0
    for call in calls:
        change = call[0]
        fence = call[1] if len(call) > 1 else None
        now = call[2] if len(call) > 2 else 0.0
        if not merged.can_absorb(change):
            return None
        merged.absorb(change)
        fences.add(fence)
        latest = max(latest, now)
    if len(fences) != 1:
        return None
    return merged, fences.pop(), latest


register_merge(apply_change_thd, merge_change_writes)
register_pipelined(apply_change_thd)

# The statements of the per-task writes (an attempt's start and end, a task's state), made once
# with bound parameters and run as executemany: building and compiling a statement for each row
# took most of the coordinator's writing time on short tasks. Parameter names must differ from
# column names in an UPDATE, hence the prefixes.
_ATTEMPTS_INSERT = attempts.insert()
_OUTPUTS_INSERT = outputs.insert()
_WORKER_TASKS_DONE = (
    workers.update()
    .where(workers.c.id == sa.bindparam("b_id"))
    .values(tasks_done=workers.c.tasks_done + sa.bindparam("b_count"))
)


@functools.cache
def _attempt_update(columns: tuple[str, ...]) -> sa.Update:
    return (
        attempts.update()
        .where(attempts.c.id == sa.bindparam("b_id"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


@functools.cache
def _task_update(columns: tuple[str, ...]) -> sa.Update:
    return (
        tasks.update()
        .where(tasks.c.job_id == sa.bindparam("b_job"), tasks.c.task_id == sa.bindparam("b_task"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


_Row = tuple[tuple[str, ...], dict[str, Any]]


def _attempt_row(update: AttemptUpdate) -> _Row:
    values: dict[str, Any] = {
        "state": update.state,
        "ended": update.ended,
        "exit_code": update.exit_code,
        "error": update.error,
        "stdout": update.stdout,
        "stderr": update.stderr,
    }
    if update.worker_id is not None:
        values["worker_id"] = update.worker_id
    return _row(values, b_id=update.id)


def _task_row(job_id: str, task_id: str, values: Mapping[str, Any]) -> _Row:
    return _row(values, b_job=job_id, b_task=task_id)


def _row(values: Mapping[str, Any], **keys: str) -> _Row:
    columns = tuple(sorted(values))
    params: dict[str, Any] = {f"v_{c}": values[c] for c in columns}
    params.update(keys)
    return columns, params


def _run_grouped(
    conn: sa.Connection, rows: Sequence[_Row], statement: Callable[[tuple[str, ...]], sa.Update]
) -> None:
    """Run each row's statement, rows of the same columns as one executemany.

    A row may update what an earlier row of the same key (its ``b_`` parameters) did, so rows
    go in layers: a row is one layer after the last earlier row of its key, and layers run in
    order. Rows of other keys are independent, so within a layer those of the same columns go
    together whatever their order: changes written as one (see merge_change_writes) interleave
    several sets of columns, and one statement per row would cost a round trip each.
    """
    layers: list[dict[tuple[str, ...], list[dict[str, Any]]]] = []
    last_layer: dict[tuple[Any, ...], int] = {}
    for columns, params in rows:
        key = tuple(v for k, v in sorted(params.items()) if k.startswith("b_"))
        layer = last_layer.get(key, -1) + 1
        last_layer[key] = layer
        if layer == len(layers):
            layers.append({})
        layers[layer].setdefault(columns, []).append(params)
    for batches in layers:
        for columns, batch in batches.items():
            execute_plain(conn, statement(columns), batch)


def _output_values(o: OutputRow) -> dict[str, Any]:
    return {
        "job_id": o.job_id,
        "task_id": o.task_id,
        "name": o.name,
        "digest": o.digest,
        "size": o.size,
    }


def _summaries(conn: sa.Connection, rows: Sequence[Any]) -> list[JobSummary]:
    if not rows:
        return []
    counts: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys([s.value for s in TaskStatus], 0)
    )
    ids = [r.id for r in rows]
    query = (
        sa.select(tasks.c.job_id, tasks.c.state, sa.func.count())
        .where(tasks.c.job_id.in_(ids))
        .group_by(tasks.c.job_id, tasks.c.state)
    )
    for job_id, state, n in conn.execute(query):
        counts[job_id][state] = n
    return [
        JobSummary(
            id=r.id,
            name=r.name,
            state=r.state,
            priority=r.priority,
            created=r.created,
            ended=r.ended,
            message=r.message,
            total=r.total,
            counts=counts[r.id],
        )
        for r in rows
    ]


_SUMMARY_COLUMNS = (
    jobs.c.id,
    jobs.c.name,
    jobs.c.state,
    jobs.c.priority,
    jobs.c.created,
    jobs.c.ended,
    jobs.c.message,
    jobs.c.total,
)


def job_summary_thd(conn: sa.Connection, job_id: str) -> JobSummary | None:
    rows = conn.execute(sa.select(*_SUMMARY_COLUMNS).where(jobs.c.id == job_id)).all()
    found = _summaries(conn, rows)
    return found[0] if found else None


def job_owner_thd(conn: sa.Connection, job_id: str) -> int | None:
    owner = conn.execute(sa.select(jobs.c.owner).where(jobs.c.id == job_id)).scalar()
    return None if owner is None else int(owner)


def list_jobs_thd(conn: sa.Connection, limit: int = 200) -> list[JobSummary]:
    rows = conn.execute(
        sa.select(*_SUMMARY_COLUMNS).order_by(jobs.c.created.desc(), jobs.c.id).limit(limit)
    ).all()
    return _summaries(conn, rows)


def list_tasks_thd(conn: sa.Connection, job_id: str) -> list[TaskInfo]:
    query = (
        sa.select(
            tasks.c.task_id,
            tasks.c.state,
            tasks.c.cost,
            tasks.c.worker,
            tasks.c.attempts,
            tasks.c.started,
            tasks.c.ended,
            tasks.c.checkpointed,
        )
        .where(tasks.c.job_id == job_id)
        .order_by(tasks.c.position)
    )
    return [
        TaskInfo(
            id=r.task_id,
            state=r.state,
            cost=r.cost,
            worker=r.worker,
            attempts=r.attempts,
            started=r.started,
            ended=r.ended,
            checkpointed=r.checkpointed,
        )
        for r in conn.execute(query)
    ]


def attempt_log_thd(
    conn: sa.Connection, job_id: str, task_id: str, number: int | None
) -> AttemptLog | None:
    query = (
        sa.select(attempts, workers.c.name.label("worker_name"))
        .select_from(attempts.outerjoin(workers, workers.c.id == attempts.c.worker_id))
        .where(attempts.c.job_id == job_id, attempts.c.task_id == task_id)
    )
    if number is None:
        query = query.order_by(attempts.c.number.desc()).limit(1)
    else:
        query = query.where(attempts.c.number == number)
    row = conn.execute(query).first()
    if row is None:
        return None
    return AttemptLog(
        task=task_id,
        attempt=row.number,
        state=row.state,
        worker=row.worker_name,
        exit_code=row.exit_code,
        error=row.error,
        stdout=row.stdout,
        stderr=row.stderr,
    )


def task_exists_thd(conn: sa.Connection, job_id: str, task_id: str) -> bool:
    return (
        conn.execute(
            sa.select(tasks.c.task_id).where(tasks.c.job_id == job_id, tasks.c.task_id == task_id)
        ).first()
        is not None
    )


def outputs_thd(conn: sa.Connection, job_id: str) -> list[OutputRow]:
    query = sa.select(outputs).where(outputs.c.job_id == job_id)
    return [
        OutputRow(job_id=r.job_id, task_id=r.task_id, name=r.name, digest=r.digest, size=r.size)
        for r in conn.execute(query)
    ]


def job_spec_thd(conn: sa.Connection, job_id: str) -> str | None:
    return conn.execute(sa.select(jobs.c.spec).where(jobs.c.id == job_id)).scalar()


def recover_running_jobs_thd(
    conn: sa.Connection, groups: Collection[str] | None = None
) -> list[RecoveredJob]:
    """Every running job (of ``groups`` only, when given) with its tasks, outputs and running
    attempts, to rebuild memory."""
    query = sa.select(jobs).where(jobs.c.state == JOB_RUNNING).order_by(jobs.c.created)
    if groups is not None:
        query = query.where(in_groups(jobs.c.grp, groups))
    return [_recovered(conn, r) for r in conn.execute(query).all()]


def recover_job_thd(conn: sa.Connection, job_id: str) -> RecoveredJob | None:
    """One job as the store has it, whatever its state (to rescue an ended job)."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    return None if row is None else _recovered(conn, row)


def _recovered(conn: sa.Connection, r: Any) -> RecoveredJob:
    row = JobRow(
        id=r.id,
        name=r.name,
        owner=r.owner,
        state=r.state,
        priority=r.priority,
        created=r.created,
        total=r.total,
        spec=r.spec,
        ended=r.ended,
        message=r.message,
        group=r.grp,
    )
    task_outputs: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)
    for o in conn.execute(sa.select(outputs).where(outputs.c.job_id == r.id)):
        task_outputs[o.task_id][o.name] = (o.digest, o.size)
    task_rows = tuple(
        RecoveredTask(
            task_id=t.task_id,
            state=TaskStatus(t.state),
            failures=t.failures,
            attempts=t.attempts,
            outputs=task_outputs.get(t.task_id, {}),
        )
        for t in conn.execute(
            sa.select(tasks).where(tasks.c.job_id == r.id).order_by(tasks.c.position)
        )
    )
    running = tuple(
        RecoveredAttempt(
            id=a.id,
            task_id=a.task_id,
            number=a.number,
            worker_id=a.worker_id,
            started=a.started,
            speculative=bool(a.speculative),
            lineage=a.lineage,
        )
        for a in conn.execute(
            sa.select(attempts).where(
                attempts.c.job_id == r.id, attempts.c.state == AttemptStatus.RUNNING
            )
        )
    )
    return RecoveredJob(row=row, tasks=task_rows, running=running)
