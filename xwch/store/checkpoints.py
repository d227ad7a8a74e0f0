"""Queries about tasks' checkpoints: the latest few of each running task, and which of their
objects may be dropped from warehouses once no checkpoint names them any more.

Writes take the tasks' manager's fence, like every change of tasks (see ``apply_change_thd``):
a coordinator that lost its group cannot record or drop a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from xwch.store.group_locks import Fence
from xwch.store.schema import checkpoints, outputs, tasks


@dataclass(frozen=True)
class CheckpointRow:
    job_id: str
    task_id: str
    # Grows with each checkpoint of the task: the highest is the latest.
    seq: int
    manifest: str
    size: int
    content: int
    chunks: tuple[str, ...]
    taken: float

    def objects(self) -> set[str]:
        """The objects it needs at a warehouse: its manifest and chunks."""
        return {self.manifest, *self.chunks}


def save_checkpoint_thd(
    conn: sa.Connection,
    row: CheckpointRow,
    keep: int,
    fence: Fence | None = None,
    now: float = 0.0,
) -> list[str]:
    """Record ``row`` as its task's latest checkpoint, keep the ``keep`` latest, and note the
    time on the task; the objects of those dropped that nothing names any more."""
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
        )
    )
    conn.execute(
        tasks.update()
        .where(tasks.c.job_id == row.job_id, tasks.c.task_id == row.task_id)
        .values(checkpointed=row.taken)
    )
    of_task = (checkpoints.c.job_id == row.job_id) & (checkpoints.c.task_id == row.task_id)
    old = _rows(conn, of_task & (checkpoints.c.seq <= row.seq - keep))
    return _drop_thd(conn, old)


def drop_checkpoints_thd(
    conn: sa.Connection,
    job_id: str,
    task_ids: Sequence[str] | None,
    fence: Fence | None = None,
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
    candidates: set[str] = set().union(*(r.objects() for r in rows))
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
