"""The checkpoints of running tasks: recorded as workers save them, handed to relaunched
attempts, and dropped from warehouses once superseded or once their task is over.

Checkpoints are kept per *lineage*: a task not replicated has one (0), and each replica of a
task checked by replication has its own (:mod:`xwch.coordinator.lineages`), since a replica
resumed from another's checkpoint would carry that one's mistakes (or lies) into its own vote.
Each lineage has its ``KEEP`` latest recorded, newest last: an attempt continuing it gets them
newest first and restores the first it can read whole, so one lost or corrupt checkpoint costs
only the progress since the one before. A checkpoint is taken only from an attempt currently
running the task, under the lineage that attempt continues, and only once every object it
names is stored at a warehouse; it is written to the store, under the tasks' manager's fence,
before the worker is answered. Objects that no kept checkpoint, no output and no running job's
file names any more are deleted from the warehouses that hold them (a capability of op
``delete`` each): those of checkpoints superseded, of a replica's lineage once it returned its
result, of every lineage once the task is over.
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
    attempt_worker_thd,
    drop_checkpoints_thd,
    drop_lineage_thd,
    load_checkpoints_thd,
    load_lineage_workers_thd,
    save_checkpoint_thd,
    unnamed_objects_thd,
)
from xwch.store.database import Database

# Deletes one object at a warehouse: (warehouse URL, digest, delete capability).
DropRequest = Callable[[str, str, str], Awaitable[None]]
TaskKey = tuple[str, str]
# (job, task, lineage)
LineageKey = tuple[str, str, int]


class CheckpointBook:
    """Keeps the latest checkpoints of the tasks of a :class:`TasksManager`."""

    log = Logger()

    # Checkpoints kept per lineage: the latest, and the one before it should the latest be lost.
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
        # (job, task, lineage) -> its kept checkpoints, oldest first.
        self._kept: dict[LineageKey, list[CheckpointRow]] = {}
        # Sequence numbers are the task's, across its lineages: the highest is its latest.
        self._next_seq: dict[TaskKey, int] = {}
        # Deletions at warehouses under way (awaited by tests and at shutdown), and the
        # objects they delete: a checkpoint naming one of those is refused until it is stored
        # again (replicas of one program often save the very same chunks).
        self._dropping: set[Deferred[None]] = set()
        self._being_dropped: set[str] = set()
        tasks.checkpoints = self

    async def recover(self) -> None:
        """Rebuild memory from the store (the tasks' manager has recovered its jobs)."""
        job_ids = list(self._tasks.jobs)
        rows = await self._db.read(load_checkpoints_thd, job_ids)
        for row in rows:
            self._kept.setdefault((row.job_id, row.task_id, row.lineage), []).append(row)
            key = (row.job_id, row.task_id)
            self._next_seq[key] = max(self._next_seq.get(key, 1), row.seq + 1)
        await self._recover_lineages(job_ids)

    async def _recover_lineages(self, job_ids: list[str]) -> None:
        """Replicas' lineages that may still be continued: those with checkpoints kept or an
        attempt running, with every worker that ran them. The others (over, or lost before
        their first checkpoint) are forgotten like the votes they belong to."""
        lineages = self._tasks.replicated.lineages
        alive = set(self._kept) | {
            (a.job_id, a.task_id, a.lineage) for a in self._tasks.attempts.values() if a.lineage
        }
        for ran in await self._db.read(load_lineage_workers_thd, job_ids):
            key = (ran.job_id, ran.task_id)
            if (*key, ran.lineage) in alive:
                lineages.join(key, ran.lineage, ran.worker_id)
        for a in self._tasks.attempts.values():
            if a.lineage:
                lineages.join((a.job_id, a.task_id), a.lineage, a.worker_id, a.id)

    def kept(self, job_id: str, task_id: str, lineage: int = 0) -> list[CheckpointRow]:
        """The kept checkpoints of one lineage of the task, oldest first."""
        return list(self._kept.get((job_id, task_id, lineage), ()))

    # Saving

    async def record(self, worker_id: str, saved: CheckpointSaved) -> CheckpointRecorded:
        """A worker saved the checkpoint of ``saved.attempt``: record it as the latest of the
        lineage that attempt continues, if it still runs the task (raises for an attempt of
        another worker)."""
        named = [saved.manifest, *saved.chunks]
        # Perhaps reported to another member; looked up first, so that nothing waits between
        # the checks below and the record in memory.
        await self._catalog.learn(named)
        attempt = self._tasks.attempt_of(saved.attempt, worker_id)
        if attempt is None:
            return await self._refused(worker_id, saved)
        job = self._tasks.jobs.get(attempt.job_id)
        if job is None:
            return await self._refused(worker_id, saved)
        task = job.tasks[attempt.task_id]
        if task.spec.checkpoint is None or task.state != TaskStatus.RUNNING:
            return await self._refused(worker_id, saved)
        # One being deleted counts as missing: stored again, it is named safely.
        missing = sorted(set(self._catalog.missing(named)) | (set(named) & self._being_dropped))
        if missing:
            raise MissingObjects(missing)
        task_key = (attempt.job_id, attempt.task_id)
        seq = self._next_seq.get(task_key, 1)
        self._next_seq[task_key] = seq + 1
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
            lineage=attempt.lineage,
        )
        # Memory first, then the store, then the answer (the tasks' manager's order).
        kept = self._kept.setdefault((*task_key, attempt.lineage), [])
        kept.append(row)
        del kept[: -self.KEEP]
        unused = await self._tasks.write(save_checkpoint_thd, row, self.KEEP)
        self._drop_objects(unused)
        return CheckpointRecorded(recorded=True, taken=now)

    async def _refused(self, worker_id: str, saved: CheckpointSaved) -> CheckpointRecorded:
        """A save not recorded (its attempt no longer runs the task): the objects its worker
        stored for it alone are dropped, lest they stay at the warehouse for nothing."""
        # Only for an attempt the store knows was this worker's: a worker naming any attempt
        # cannot have whatever it likes looked up and deleted.
        if await self._db.read(attempt_worker_thd, saved.attempt) == worker_id:
            digests = [saved.manifest, *saved.chunks]
            self._drop_objects(await self._db.read(unnamed_objects_thd, digests))
        return CheckpointRecorded(recorded=False)

    # Relaunching

    def plan(
        self, job_id: str, spec: dag.Task, lineage: int
    ) -> tuple[CheckpointPlan | None, set[str]]:
        """What an assignment of the task, continuing ``lineage``, says of its checkpoint, and
        the objects whose sources it must carry."""
        if spec.checkpoint is None:
            return None, set()
        # Only the lineage's own: replicas must reach their results apart.
        kept = self._kept.get((job_id, spec.id, lineage), [])
        restore = tuple(SavedCheckpoint(r.manifest, r.size, r.taken) for r in reversed(kept))
        objects: set[str] = set().union(*(r.objects() for r in kept)) if kept else set()
        return CheckpointPlan(spec.checkpoint, spec.checkpoint_every, restore), objects

    # Dropping

    def tasks_over(self, job_id: str, task_ids: Iterable[str] | None = None) -> None:
        """These tasks (None: every task of the job) need their checkpoints no more, of any
        lineage."""
        over = None if task_ids is None else set(task_ids)
        keys = [k for k in self._kept if k[0] == job_id and (over is None or k[1] in over)]
        if not keys:
            return
        for key in keys:
            del self._kept[key]
            self._next_seq.pop(key[:2], None)
        ids = None if over is None else sorted({k[1] for k in keys})
        written = self._tasks.write(drop_checkpoints_thd, job_id, ids)
        written.addCallbacks(self._drop_objects, self._not_dropped)

    def lineage_over(self, job_id: str, task_id: str, lineage: int) -> None:
        """A replica returned its result: nothing continues its lineage any more."""
        if self._kept.pop((job_id, task_id, lineage), None) is None:
            return
        written = self._tasks.write(drop_lineage_thd, job_id, task_id, lineage)
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
            if digest in named or digest in self._being_dropped:
                continue
            self._being_dropped.add(digest)
            dropping = Deferred.fromCoroutine(self._drop(digest))
            self._dropping.add(dropping)
            dropping.addErrback(self._drop_failed, digest)
            dropping.addBoth(self._dropped, dropping, digest)

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

    def _dropped(self, _: object, dropping: Deferred[None], digest: str) -> None:
        self._dropping.discard(dropping)
        self._being_dropped.discard(digest)

    def dropping(self) -> Deferred[list[None]]:
        """Fires once the deletions under way have ended."""
        return gatherResults(list(self._dropping), consumeErrors=True)
