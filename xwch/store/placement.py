"""Which logical group each job and each worker belongs to, and how loaded each group is.

With several coordinators on one store, a job is run, and a worker served, by the member
holding its group (``coordinator/routing.py``). Rows written before groups were shared (the
column null) belong to the first group, ``g1``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import sqlalchemy as sa

from xwch.protocol.states import TaskStatus
from xwch.protocol.wire import JOB_RUNNING
from xwch.store.group_locks import Fencing
from xwch.store.schema import jobs, tasks, workers

FIRST_GROUP = "g1"


def group_of(column: sa.ColumnElement[str | None]) -> sa.ColumnElement[str]:
    """A row's group, null read as the first group."""
    return sa.func.coalesce(column, FIRST_GROUP)


def in_groups(
    column: sa.ColumnElement[str | None], groups: Collection[str]
) -> sa.ColumnElement[bool]:
    return group_of(column).in_(sorted(groups))


def job_group_thd(conn: sa.Connection, job_id: str) -> str | None:
    """The group of ``job_id``; None when there is no such job."""
    row = conn.execute(sa.select(group_of(jobs.c.grp)).where(jobs.c.id == job_id)).first()
    return None if row is None else str(row[0])


def worker_group_thd(conn: sa.Connection, worker_id: str) -> str | None:
    """The group of ``worker_id``; None when there is no such worker."""
    query = sa.select(group_of(workers.c.grp)).where(workers.c.id == worker_id)
    row = conn.execute(query).first()
    return None if row is None else str(row[0])


@dataclass
class GroupLoad:
    """What a group has: running jobs, live workers, and ready tasks waiting for a worker."""

    jobs: int = 0
    workers: int = 0
    slots: int = 0
    ready: int = 0
    # Tasks ready or running: what the group's slots are for.
    backlog: int = 0


@dataclass
class GroupLoads:
    by_group: dict[str, GroupLoad] = field(default_factory=dict)

    def of(self, group: str) -> GroupLoad:
        return self.by_group.setdefault(group, GroupLoad())


def group_loads_thd(conn: sa.Connection, with_ready: bool = False) -> GroupLoads:
    """Every group's load (``ready`` and ``backlog``, a scan of the tasks not done, only when
    asked)."""
    loads = GroupLoads()
    job_group = group_of(jobs.c.grp)
    running = sa.select(job_group, sa.func.count()).where(jobs.c.state == JOB_RUNNING)
    for group, count in conn.execute(running.group_by(job_group)):
        loads.of(group).jobs = int(count)
    worker_group = group_of(workers.c.grp)
    alive = sa.select(worker_group, sa.func.count(), sa.func.sum(workers.c.slots)).where(
        workers.c.state == "alive"
    )
    for group, count, slots in conn.execute(alive.group_by(worker_group)):
        load = loads.of(group)
        load.workers, load.slots = int(count), int(slots or 0)
    if with_ready:
        pending = (
            sa.select(job_group, tasks.c.state, sa.func.count())
            .select_from(tasks.join(jobs, jobs.c.id == tasks.c.job_id))
            .where(
                tasks.c.state.in_([TaskStatus.READY, TaskStatus.RUNNING]),
                jobs.c.state == JOB_RUNNING,
            )
        )
        for group, state, count in conn.execute(pending.group_by(job_group, tasks.c.state)):
            load = loads.of(group)
            load.backlog += int(count)
            if state == TaskStatus.READY:
                load.ready = int(count)
    return loads


def move_workers_thd(
    conn: sa.Connection,
    worker_ids: Collection[str],
    group: str,
    fence: Fencing | None = None,
    now: float = 0.0,
) -> None:
    """Put these workers in ``group``; refused (NotHeld) unless ``fence``, that of the member
    holding their old group, still holds."""
    if fence is not None:
        fence.check_thd(conn, now)
    if worker_ids:
        conn.execute(workers.update().where(workers.c.id.in_(sorted(worker_ids))).values(grp=group))
