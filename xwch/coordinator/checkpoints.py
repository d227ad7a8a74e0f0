"""The checkpoints of running tasks: recorded as workers save them, handed to relaunched
attempts, and dropped from warehouses once superseded or once their task is over.

Each task that keeps a checkpoint has its ``KEEP`` latest recorded, newest last: a relaunched
attempt gets them newest first and restores the first it can read whole, so one lost or
corrupt checkpoint costs only the progress since the one before. A checkpoint is taken only
from the attempt currently running the task, and only once every object it names is stored at
a warehouse; it is written to the store, under the tasks' manager's fence, before the worker
is answered. Objects that no kept checkpoint, no output and no running job's file names any
more are deleted from the warehouses that hold them (a capability of op ``delete`` each).

A task checked by replication keeps no checkpoint: its replicas must reach their results apart,
and a replica resumed from another's checkpoint would carry that one's mistakes (or lies) into
its own vote.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch import dag
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.tasks import MissingObjects, TasksManager
from xwch.protocol.checkpoints import (
    CheckpointPlan,
    CheckpointRecorded,
    CheckpointSaved,
    SavedCheckpoint,
)
from xwch.protocol.states import TaskStatus
from xwch.store.checkpoints import (
    CheckpointRow,
    drop_checkpoints_thd,
    load_checkpoints_thd,
    save_checkpoint_thd,
)
from xwch.store.database import Database

# Deletes one object at a warehouse: (warehouse URL, digest, delete capability).
DropRequest = Callable[[str, str, str], Awaitable[None]]
TaskKey = tuple[str, str]


class CheckpointBook:
    """Keeps the latest checkpoints of the tasks of a :class:`TasksManager`."""

    log = Logger()

    # Checkpoints kept per task: the latest, and the one before it should the latest be lost.
    KEEP = 2

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        tasks: TasksManager,
        catalog: Catalog,
        drop_object: DropRequest | None = None,
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._tasks = tasks
        self._catalog = catalog
        self._drop_object = drop_object
        # (job, task) -> its kept checkpoints, oldest first.
        self._kept: dict[TaskKey, list[CheckpointRow]] = {}
        self._next_seq: dict[TaskKey, int] = {}
        # Deletions at warehouses under way (awaited by tests and at shutdown).
        self._dropping: set[Deferred[None]] = set()
        tasks.checkpoints = self

    async def recover(self) -> None:
        """Rebuild memory from the store (the tasks' manager has recovered its jobs)."""
        rows = await self._db.read(load_checkpoints_thd, list(self._tasks.jobs))
        for row in rows:
            key = (row.job_id, row.task_id)
            self._kept.setdefault(key, []).append(row)
            self._next_seq[key] = max(self._next_seq.get(key, 1), row.seq + 1)

    def kept(self, job_id: str, task_id: str) -> list[CheckpointRow]:
        """The task's kept checkpoints, oldest first."""
        return list(self._kept.get((job_id, task_id), ()))

    # Saving

    async def record(self, worker_id: str, saved: CheckpointSaved) -> CheckpointRecorded:
        """A worker saved the checkpoint of ``saved.attempt``: record it as its task's latest,
        if that attempt still runs the task (raises for an attempt of another worker)."""
        attempt = self._tasks.attempt_of(saved.attempt, worker_id)
        if attempt is None:
            return CheckpointRecorded(recorded=False)
        job = self._tasks.jobs.get(attempt.job_id)
        if job is None:
            return CheckpointRecorded(recorded=False)
        task = job.tasks[attempt.task_id]
        if (
            task.spec.checkpoint is None
            or task.spec.replication is not None
            or task.state != TaskStatus.RUNNING
        ):
            return CheckpointRecorded(recorded=False)
        missing = self._catalog.missing([saved.manifest, *saved.chunks])
        if missing:
            raise MissingObjects(missing)
        key = (attempt.job_id, attempt.task_id)
        seq = self._next_seq.get(key, 1)
        self._next_seq[key] = seq + 1
        now = self._reactor.seconds()
        row = CheckpointRow(
            job_id=attempt.job_id,
            task_id=attempt.task_id,
            seq=seq,
            manifest=saved.manifest,
            size=saved.size,
            content=saved.content,
            chunks=tuple(dict.fromkeys(saved.chunks)),
            taken=now,
        )
        # Memory first, then the store, then the answer (the tasks' manager's order).
        kept = self._kept.setdefault(key, [])
        kept.append(row)
        del kept[: -self.KEEP]
        unused = await self._tasks.write(save_checkpoint_thd, row, self.KEEP)
        self._drop_objects(unused)
        return CheckpointRecorded(recorded=True, taken=now)

    # Relaunching

    def plan(self, job_id: str, spec: dag.Task) -> tuple[CheckpointPlan | None, set[str]]:
        """What an assignment of the task says of its checkpoint, and the objects whose
        sources it must carry."""
        if spec.checkpoint is None or spec.replication is not None:
            # Replicas must reach their results apart: one resumed from another's checkpoint
            # would carry that one's mistakes (or lies) into its own vote.
            return None, set()
        kept = self._kept.get((job_id, spec.id), [])
        restore = tuple(SavedCheckpoint(r.manifest, r.size, r.taken) for r in reversed(kept))
        objects: set[str] = set().union(*(r.objects() for r in kept)) if kept else set()
        return CheckpointPlan(spec.checkpoint, spec.checkpoint_every, restore), objects

    # Dropping

    def tasks_over(self, job_id: str, task_ids: Iterable[str] | None = None) -> None:
        """These tasks (None: every task of the job) need their checkpoints no more."""
        if task_ids is None:
            keys = [k for k in self._kept if k[0] == job_id]
        else:
            keys = [(job_id, t) for t in task_ids if (job_id, t) in self._kept]
        if not keys:
            return
        for key in keys:
            del self._kept[key]
            self._next_seq.pop(key, None)
        ids = None if task_ids is None else [k[1] for k in keys]
        written = self._tasks.write(drop_checkpoints_thd, job_id, ids)
        written.addCallbacks(self._drop_objects, self._not_dropped)

    def _not_dropped(self, failure: Failure) -> None:
        self.log.warn("checkpoints not dropped from the store: {error}", error=failure.value)

    def _drop_objects(self, digests: Collection[str]) -> None:
        """Delete from warehouses those of ``digests`` no running job still names."""
        if not digests:
            return
        named: set[str] = set()
        for job in self._tasks.jobs.values():
            named |= self._tasks.job_objects(job)
        for kept in self._kept.values():
            for row in kept:
                named |= row.objects()
        for digest in digests:
            if digest in named:
                continue
            dropping = Deferred.fromCoroutine(self._drop(digest))
            self._dropping.add(dropping)
            dropping.addErrback(self._drop_failed, digest)
            dropping.addBoth(self._dropped, dropping)

    async def _drop(self, digest: str) -> None:
        for warehouse in self._catalog.holders(digest):
            if self._drop_object is not None:
                try:
                    await self._drop_object(
                        warehouse.url, digest, self._catalog.delete_capability(warehouse, digest)
                    )
                except Exception as e:
                    # Left there: it costs only space, and the warehouse is told again never.
                    self.log.warn(
                        "cannot drop {digest} at {url}: {error}",
                        digest=digest,
                        url=warehouse.url,
                        error=e,
                    )
                    continue
            await self._catalog.forget_objects(warehouse.id, [digest])

    def _drop_failed(self, failure: Failure, digest: str) -> None:
        self.log.failure("dropping {digest} failed", failure, digest=digest)

    def _dropped(self, _: object, dropping: Deferred[None]) -> None:
        self._dropping.discard(dropping)

    def dropping(self) -> Deferred[list[None]]:
        """Fires once the deletions under way have ended."""
        return gatherResults(list(self._dropping), consumeErrors=True)
