"""Queries about tasks' checkpoints: the latest few of each lineage of each running task, and
which of their objects may be dropped from warehouses once no checkpoint names them any more.

A task not replicated has one lineage, 0; each replica of a replicated task has its own, named
by the number of the attempt that opened it (see ``xwch.coordinator.lineages``), and the
workers of the attempts that continued it are read back from the attempts' rows.

Writes take the tasks' manager's fence, like every change of tasks (see ``apply_change_thd``):
a coordinator that lost its group cannot record or drop a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from xwch.store.group_locks import Fencing
from xwch.store.schema import attempts, checkpoints, outputs, tasks


@dataclass(frozen=True)
class CheckpointRow:
    job_id: str
    task_id: str
    # Grows with each checkpoint of the task, whatever its lineage: the highest is the latest.
    seq: int
    manifest: str
    size: int
    content: int
    chunks: tuple[str, ...]
    taken: float
    # The replica whose checkpoint it is (0: the task is not replicated).
    lineage: int = 0

    def objects(self) -> set[str]:
        """The objects it needs at a warehouse: its manifest and chunks."""
        return {self.manifest, *self.chunks}


def save_checkpoint_thd(
    conn: sa.Connection,
    row: CheckpointRow,
    keep: int,
    fence: Fencing | None = None,
    now: float = 0.0,
) -> list[str]:
    """Record ``row`` as its lineage's latest checkpoint, keep the ``keep`` latest of that
    lineage, and note the time on the task; the objects of those dropped that nothing names
    any more."""
    if fence is not None:
        fence.check_thd(conn, now)
    conn.execute(
        checkpoints.insert().values(
            job_id=row.job_id,
            task_id=row.task_id,
            seq=row.seq,
            manifest=row.manifest,
            size=row.size,
            content=row.content,
            chunks=json.dumps(list(row.chunks)),
            taken=row.taken,
            lineage=row.lineage,
        )
    )
    conn.execute(
        tasks.update()
        .where(tasks.c.job_id == row.job_id, tasks.c.task_id == row.task_id)
        .values(checkpointed=row.taken)
    )
    of_lineage = (
        (checkpoints.c.job_id == row.job_id)
        & (checkpoints.c.task_id == row.task_id)
        & (checkpoints.c.lineage == row.lineage)
    )
    # Sequence numbers are the task's, shared by its lineages: the lineage's own are counted.
    return _drop_thd(conn, _rows(conn, of_lineage)[:-keep])


def drop_lineage_thd(
    conn: sa.Connection,
    job_id: str,
    task_id: str,
    lineage: int,
    fence: Fencing | None = None,
    now: float = 0.0,
) -> list[str]:
    """Forget the checkpoints of one lineage of a task (its replica returned its result); the
    objects that nothing names any more."""
    if fence is not None:
        fence.check_thd(conn, now)
    where = (
        (checkpoints.c.job_id == job_id)
        & (checkpoints.c.task_id == task_id)
        & (checkpoints.c.lineage == lineage)
    )
    return _drop_thd(conn, _rows(conn, where))


def drop_checkpoints_thd(
    conn: sa.Connection,
    job_id: str,
    task_ids: Sequence[str] | None,
    fence: Fencing | None = None,
    now: float = 0.0,
) -> list[str]:
    """Forget the checkpoints of these tasks (None: of the whole job), which are over; the
    objects that nothing names any more."""
    if fence is not None:
        fence.check_thd(conn, now)
    where = checkpoints.c.job_id == job_id
    if task_ids is not None:
        where = where & checkpoints.c.task_id.in_(list(task_ids))
    return _drop_thd(conn, _rows(conn, where))


def load_checkpoints_thd(conn: sa.Connection, job_ids: Collection[str]) -> list[CheckpointRow]:
    """The checkpoints kept for these jobs (a coordinator rebuilding its memory)."""
    found: list[CheckpointRow] = []
    ids = list(job_ids)
    for start in range(0, len(ids), 500):
        found += _rows(conn, checkpoints.c.job_id.in_(ids[start : start + 500]))
    return found


@dataclass(frozen=True)
class LineageWorker:
    """A worker that ran an attempt continuing a lineage of a replicated task."""

    job_id: str
    task_id: str
    lineage: int
    worker_id: str


def load_lineage_workers_thd(conn: sa.Connection, job_ids: Collection[str]) -> list[LineageWorker]:
    """Who ran each lineage of the replicated tasks of these jobs (a coordinator rebuilding its
    memory): every attempt's worker counts, whatever became of the attempt."""
    found: list[LineageWorker] = []
    ids = list(job_ids)
    for start in range(0, len(ids), 500):
        query = (
            sa.select(
                attempts.c.job_id, attempts.c.task_id, attempts.c.lineage, attempts.c.worker_id
            )
            .where(attempts.c.job_id.in_(ids[start : start + 500]), attempts.c.lineage > 0)
            .distinct()
            .order_by(attempts.c.job_id, attempts.c.task_id, attempts.c.lineage)
        )
        found += [
            LineageWorker(r.job_id, r.task_id, r.lineage, r.worker_id) for r in conn.execute(query)
        ]
    return found


def _rows(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[CheckpointRow]:
    query = sa.select(checkpoints).where(where).order_by(checkpoints.c.seq)
    return [
        CheckpointRow(
            job_id=r.job_id,
            task_id=r.task_id,
            seq=r.seq,
            manifest=r.manifest,
            size=r.size,
            content=r.content,
            chunks=tuple(json.loads(r.chunks)),
            taken=r.taken,
            lineage=r.lineage,
        )
        for r in conn.execute(query)
    ]


def _drop_thd(conn: sa.Connection, rows: Iterable[CheckpointRow]) -> list[str]:
    """Delete ``rows``; of their objects, those no other checkpoint and no output names."""
    rows = list(rows)
    if not rows:
        return []
    for row in rows:
        conn.execute(
            checkpoints.delete().where(
                checkpoints.c.job_id == row.job_id,
                checkpoints.c.task_id == row.task_id,
                checkpoints.c.seq == row.seq,
            )
        )
    return unnamed_objects_thd(conn, set().union(*(r.objects() for r in rows)))


def unnamed_objects_thd(conn: sa.Connection, digests: Collection[str]) -> list[str]:
    """Those of ``digests`` that no kept checkpoint and no output names."""
    candidates = set(digests)
    # Checkpoints are few (a couple per running task that keeps one): read them all.
    for other in _rows(conn, sa.true()):
        candidates -= other.objects()
    # A chunk may equal a whole output somewhere (a small file of the same bytes).
    listed = sorted(candidates)
    for start in range(0, len(listed), 500):
        named = conn.execute(
            sa.select(outputs.c.digest).where(outputs.c.digest.in_(listed[start : start + 500]))
        )
        candidates -= {r.digest for r in named}
    return sorted(candidates)


def attempt_worker_thd(conn: sa.Connection, attempt_id: str) -> str | None:
    """The worker an attempt was given to (None: no such attempt)."""
    found = conn.execute(sa.select(attempts.c.worker_id).where(attempts.c.id == attempt_id))
    return found.scalar()
