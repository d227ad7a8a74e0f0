"""The tasks' manager: jobs, their DAGs, the blocked and ready tasks, and every attempt.

State lives in memory for speed and every change is written to the store before the request
that caused it is answered. The order is always: decide and apply in memory (on the reactor
thread, so decisions never interleave), queue the write (the store has one writer thread, so
writes land in decision order), then answer when the write has committed.

Task states follow spec/cli.md: ``blocked`` until every task it depends on is done, then
``ready``; ``running`` while an attempt holds it; ``done``; ``failed`` once a failure finds no
retry left; ``cancelled``. A job is done when every task is; it fails as soon as one task fails
for good, and its other tasks are then cancelled.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch import dag
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.scheduler import Scheduler, WorkerView
from xwch.errors import XwchError
from xwch.protocol import (
    JOB_CANCELLED,
    JOB_DONE,
    JOB_FAILED,
    JOB_RUNNING,
    OUTCOME_SUCCEEDED,
    TASK_BLOCKED,
    TASK_CANCELLED,
    TASK_DONE,
    TASK_FAILED,
    TASK_READY,
    TASK_RUNNING,
    Assignment,
    AttemptResult,
    BinaryRef,
    InputFile,
)
from xwch.store import jobs as job_queries
from xwch.store.database import Database
from xwch.store.records import (
    AttemptUpdate,
    Change,
    JobRow,
    JobUpdate,
    NewAttempt,
    NewTask,
    OutputRow,
    RecoveredJob,
    TaskUpdate,
)

# Attempt states in the store.
ATTEMPT_RUNNING = "running"
ATTEMPT_SUCCEEDED = "succeeded"
ATTEMPT_FAILED = "failed"
ATTEMPT_LOST = "lost"
ATTEMPT_CANCELLED = "cancelled"
ATTEMPT_GIVEN_BACK = "given-back"


class MissingObjects(XwchError):
    """Objects a request refers to are not stored at any warehouse."""

    def __init__(self, digests: Sequence[str]) -> None:
        self.digests = list(digests)
        super().__init__(
            f"{len(self.digests)} object(s) are not stored at any warehouse: upload them first"
        )


class NotYourAttempt(XwchError):
    """A worker spoke of an attempt given to another worker."""


class BadResult(XwchError):
    """A Work Result that cannot be right (outputs that were not declared, or missing)."""


class UnknownJob(XwchError):
    pass


@dataclass
class Attempt:
    id: str
    job_id: str
    task_id: str
    number: int
    worker_id: str
    started: float


@dataclass
class TaskState:
    spec: dag.Task
    position: int
    state: str
    failures: int = 0
    attempts: int = 0
    # How many of the tasks it depends on are not done yet.
    waiting: int = 0
    dependents: list[str] = field(default_factory=list)
    outputs: dict[str, tuple[str, int]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)


@dataclass
class JobState:
    id: str
    name: str
    owner: int
    priority: int
    order: int
    spec: dag.Job
    tasks: dict[str, TaskState]
    remaining: int
    # binary name -> the platforms it exists for (None: any platform).
    platforms: dict[str, frozenset[str] | None]
    state: str = JOB_RUNNING


def _platforms(binary: dag.Binary) -> frozenset[str] | None:
    if dag.PLATFORM_ANY in binary.variants:
        return None
    return frozenset(binary.variants)


def _job_digests(job: dag.Job) -> set[str]:
    digests = {f.digest for f in job.files.values() if f.digest}
    for binary in job.binaries.values():
        digests.update(v.digest for v in binary.variants.values() if v.digest)
    return digests


class TasksManager:
    """Keeps jobs and tasks, hands out attempts, and takes their results."""

    log = Logger()

    def __init__(
        self, reactor: IReactorTime, db: Database, catalog: Catalog, scheduler: Scheduler
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._catalog = catalog
        self._scheduler = scheduler
        self.jobs: dict[str, JobState] = {}
        self.attempts: dict[str, Attempt] = {}
        # Attempts a worker must kill, told in its next Work Alive reply.
        self._cancels: dict[str, set[str]] = {}
        self._job_order = itertools.count()

    # Jobs

    async def submit(self, wire: object, owner: int) -> str:
        """Create a job from its wire form; nothing is created if anything is wrong."""
        job = dag.parse_wire_job(wire)
        missing = self._catalog.missing(_job_digests(job))
        if missing:
            raise MissingObjects(missing)
        now = self._reactor.seconds()
        job_id = "j" + secrets.token_hex(5)
        state = self._build(job_id, job, owner, order=next(self._job_order))
        new_tasks = [
            NewTask(
                task_id=t.spec.id,
                position=t.position,
                state=t.state,
                cost=t.spec.cost,
                retries=t.spec.retries,
            )
            for t in state.tasks.values()
        ]
        row = JobRow(
            id=job_id,
            name=job.name,
            owner=owner,
            state=JOB_RUNNING,
            priority=job.priority,
            created=now,
            total=len(new_tasks),
            spec=json.dumps(job.to_wire(), separators=(",", ":")),
        )
        await self._db.write(job_queries.create_job_thd, row, new_tasks)
        self._adopt(state)
        self.log.info(
            "job {job} ({name}) created with {n} tasks", job=job_id, name=job.name, n=len(new_tasks)
        )
        return job_id

    def _build(self, job_id: str, job: dag.Job, owner: int, order: int) -> JobState:
        tasks: dict[str, TaskState] = {}
        for position, spec in enumerate(job.tasks):
            tasks[spec.id] = TaskState(spec=spec, position=position, state=TASK_BLOCKED)
        for t in tasks.values():
            deps = t.spec.dependencies()
            t.waiting = len(deps)
            for dep in deps:
                tasks[dep].dependents.append(t.spec.id)
            if not deps:
                t.state = TASK_READY
        return JobState(
            id=job_id,
            name=job.name,
            owner=owner,
            priority=job.priority,
            order=order,
            spec=job,
            tasks=tasks,
            remaining=len(tasks),
            platforms={name: _platforms(b) for name, b in job.binaries.items()},
        )

    def _adopt(self, state: JobState) -> None:
        self.jobs[state.id] = state
        for t in state.tasks.values():
            if t.state == TASK_READY:
                self._make_ready(state, t)

    def _make_ready(self, job: JobState, task: TaskState) -> None:
        task.state = TASK_READY
        self._scheduler.add_ready(
            (job.id, task.spec.id),
            job.priority,
            job.order,
            task.position,
            job.platforms[task.spec.binary],
        )

    async def recover(self) -> None:
        """Rebuild memory from the store after a (re)start: every running job resumes."""
        recovered: list[RecoveredJob] = await self._db.read(job_queries.recover_running_jobs_thd)
        for r in recovered:
            job = dag.parse_wire_job(json.loads(r.row.spec))
            state = self._build(r.row.id, job, r.row.owner, order=next(self._job_order))
            state.priority = r.row.priority
            for saved in r.tasks:
                t = state.tasks[saved.task_id]
                t.state = saved.state
                t.failures = saved.failures
                t.attempts = saved.attempts
                t.outputs = dict(saved.outputs)
            for t in state.tasks.values():
                t.waiting = sum(
                    1 for dep in t.spec.dependencies() if state.tasks[dep].state != TASK_DONE
                )
            state.remaining = sum(1 for t in state.tasks.values() if t.state != TASK_DONE)
            for a in r.running:
                attempt = Attempt(a.id, r.row.id, a.task_id, a.number, a.worker_id, a.started)
                self.attempts[a.id] = attempt
                state.tasks[a.task_id].running.add(a.id)
            self.jobs[state.id] = state
            for t in state.tasks.values():
                if t.state == TASK_READY or (t.state == TASK_RUNNING and not t.running):
                    self._make_ready(state, t)
            self.log.info("job {job} resumed: {n} tasks left", job=state.id, n=state.remaining)

    async def cancel(self, job_id: str) -> bool:
        """Stop a job: no new attempts, running ones are killed. False if it had ended."""
        job = self.jobs.get(job_id)
        if job is None or job.state != JOB_RUNNING:
            return False
        change = Change()
        self._end_job(job, JOB_CANCELLED, "cancelled by the user", change)
        await self._db.write(job_queries.apply_change_thd, change)
        return True

    def _end_job(self, job: JobState, state: str, message: str | None, change: Change) -> None:
        """End a job: every task not done is cancelled (unless it failed) and forgotten."""
        now = self._reactor.seconds()
        job.state = state
        to_cancel = []
        for t in job.tasks.values():
            if t.state in (TASK_DONE, TASK_FAILED, TASK_CANCELLED):
                continue
            self._scheduler.remove((job.id, t.spec.id))
            for attempt_id in t.running:
                attempt = self.attempts.pop(attempt_id)
                self._cancels.setdefault(attempt.worker_id, set()).add(attempt_id)
                change.attempt_updates.append(
                    AttemptUpdate(
                        id=attempt_id, state=ATTEMPT_CANCELLED, ended=now, error="job ended"
                    )
                )
            t.running.clear()
            t.state = TASK_CANCELLED
            to_cancel.append(t.spec.id)
        if to_cancel:
            change.task_updates.append(
                TaskUpdate(job.id, tuple(to_cancel), {"state": TASK_CANCELLED, "ended": now})
            )
        change.job_updates.append(JobUpdate(job.id, state, now, message))
        del self.jobs[job.id]
        self.log.info(
            "job {job} {state}: {message}", job=job.id, state=state, message=message or ""
        )

    # Attempts

    async def assign(
        self, worker: WorkerView, worker_name: str, site: str | None, slots: int
    ) -> list[Assignment]:
        """Start attempts of the most appropriate ready tasks for a worker's Work Request."""
        if slots <= 0:
            return []
        picked = self._scheduler.pick(worker, slots)
        if not picked:
            return []
        now = self._reactor.seconds()
        change = Change()
        started: list[Attempt] = []
        for job_id, task_id in picked:
            job = self.jobs[job_id]
            t = job.tasks[task_id]
            t.attempts += 1
            t.state = TASK_RUNNING
            attempt = Attempt(
                "a" + secrets.token_hex(8), job_id, task_id, t.attempts, worker.id, now
            )
            t.running.add(attempt.id)
            self.attempts[attempt.id] = attempt
            started.append(attempt)
            change.new_attempts.append(
                NewAttempt(attempt.id, job_id, task_id, attempt.number, worker.id, worker_name, now)
            )
            change.task_updates.append(
                TaskUpdate(
                    job_id,
                    (task_id,),
                    {
                        "state": TASK_RUNNING,
                        "attempts": t.attempts,
                        "worker": worker_name,
                        "started": now,
                        "ended": None,
                    },
                )
            )
        try:
            await self._db.write(job_queries.apply_change_thd, change)
        except Exception:
            # Not durable, so not given: the tasks are ready again for the next request.
            for attempt in started:
                self._forget_attempt(attempt)
                owner = self.jobs.get(attempt.job_id)
                if owner is not None:
                    t = owner.tasks[attempt.task_id]
                    t.attempts -= 1
                    if not t.running:
                        self._make_ready(owner, t)
            raise
        return [self._assignment(a, worker, site) for a in started if a.id in self.attempts]

    def _assignment(self, attempt: Attempt, worker: WorkerView, site: str | None) -> Assignment:
        job = self.jobs[attempt.job_id]
        spec = job.tasks[attempt.task_id].spec
        variant = job.spec.binaries[spec.binary].for_platform(worker.platform)
        assert variant is not None and variant.digest is not None and variant.size is not None
        inputs = []
        for ref in spec.inputs:
            if ref.file is not None:
                entry = job.spec.files[ref.file]
                assert entry.digest is not None and entry.size is not None
                digest, size = entry.digest, entry.size
            else:
                assert ref.task is not None and ref.output is not None
                digest, size = job.tasks[ref.task].outputs[ref.output]
            inputs.append(InputFile(path=ref.local, digest=digest, size=size))
        digests = {variant.digest} | {i.digest for i in inputs}
        return Assignment(
            attempt=attempt.id,
            job=job.id,
            task=spec.id,
            number=attempt.number,
            binary=BinaryRef(variant.digest, variant.size, variant.bundle, variant.entry),
            args=tuple(spec.args),
            env=dict(spec.env),
            inputs=tuple(inputs),
            outputs=tuple(spec.outputs),
            timeout=spec.timeout,
            sources={d: self._catalog.sources(d, site) for d in sorted(digests)},
        )

    def _forget_attempt(self, attempt: Attempt) -> None:
        self.attempts.pop(attempt.id, None)
        job = self.jobs.get(attempt.job_id)
        if job is not None:
            job.tasks[attempt.task_id].running.discard(attempt.id)

    def attempt_of(self, attempt_id: str, worker_id: str) -> Attempt | None:
        """The running attempt, if it is still current; raises if another worker holds it."""
        attempt = self.attempts.get(attempt_id)
        if attempt is not None and attempt.worker_id != worker_id:
            raise NotYourAttempt(f"attempt {attempt_id} was not given to this worker")
        return attempt

    async def record_result(self, worker_id: str, result: AttemptResult) -> bool:
        """Take a Work Result. False when the attempt is no longer current (result discarded)."""
        attempt = self.attempt_of(result.attempt, worker_id)
        if attempt is None:
            return False
        job = self.jobs[attempt.job_id]
        t = job.tasks[attempt.task_id]
        succeeded = result.outcome == OUTCOME_SUCCEEDED
        if succeeded:
            names = [o.name for o in result.outputs]
            if sorted(names) != sorted(t.spec.outputs):
                raise BadResult(
                    f"outputs {sorted(names)} do not match the task's declared outputs {sorted(t.spec.outputs)}"
                )
            missing = self._catalog.missing(o.digest for o in result.outputs)
            if missing:
                raise MissingObjects(missing)
        now = self._reactor.seconds()
        change = Change()
        self._forget_attempt(attempt)
        change.attempt_updates.append(
            AttemptUpdate(
                id=attempt.id,
                state=ATTEMPT_SUCCEEDED if succeeded else ATTEMPT_FAILED,
                ended=now,
                exit_code=result.exit_code,
                error=result.error,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        )
        if t.state == TASK_RUNNING:
            if succeeded:
                change.tasks_done_by_worker[worker_id] = 1
                t.outputs = {o.name: (o.digest, o.size) for o in result.outputs}
                change.outputs.extend(
                    OutputRow(job.id, t.spec.id, o.name, o.digest, o.size) for o in result.outputs
                )
                self._task_done(job, t, now, change)
            else:
                reason = result.error or f"exit status {result.exit_code}"
                self._task_failed(job, t, now, reason, change)
        await self._db.write(job_queries.apply_change_thd, change)
        return True

    def _task_done(self, job: JobState, t: TaskState, now: float, change: Change) -> None:
        t.state = TASK_DONE
        job.remaining -= 1
        change.task_updates.append(
            TaskUpdate(job.id, (t.spec.id,), {"state": TASK_DONE, "ended": now})
        )
        newly_ready = []
        for dependent_id in t.dependents:
            dependent = job.tasks[dependent_id]
            dependent.waiting -= 1
            if dependent.waiting == 0 and dependent.state == TASK_BLOCKED:
                self._make_ready(job, dependent)
                newly_ready.append(dependent_id)
        if newly_ready:
            change.task_updates.append(
                TaskUpdate(job.id, tuple(newly_ready), {"state": TASK_READY})
            )
        if job.remaining == 0:
            self._end_job(job, JOB_DONE, None, change)

    def _task_failed(
        self, job: JobState, t: TaskState, now: float, reason: str, change: Change
    ) -> None:
        """An attempt failed or was lost: relaunch while retries last, else fail the job."""
        t.failures += 1
        if t.failures <= t.spec.retries:
            if not t.running:
                self._make_ready(job, t)
                change.task_updates.append(
                    TaskUpdate(job.id, (t.spec.id,), {"state": TASK_READY, "failures": t.failures})
                )
            self.log.info(
                "task {task} of job {job} failed ({reason}); relaunching ({n} of {retries} retries used)",
                task=t.spec.id,
                job=job.id,
                reason=reason,
                n=t.failures,
                retries=t.spec.retries,
            )
            return
        t.state = TASK_FAILED
        change.task_updates.append(
            TaskUpdate(
                job.id, (t.spec.id,), {"state": TASK_FAILED, "failures": t.failures, "ended": now}
            )
        )
        attempts = "attempt" if t.failures == 1 else f"{t.failures} attempts"
        self._end_job(
            job, JOB_FAILED, f"task {t.spec.id} failed after {attempts}: {reason}", change
        )

    async def workers_lost(self, worker_ids: Iterable[str]) -> None:
        """Workers stopped signalling: their attempts count as failed and run again elsewhere."""
        lost = set(worker_ids)
        now = self._reactor.seconds()
        change = Change()
        for attempt in [a for a in self.attempts.values() if a.worker_id in lost]:
            job = self.jobs[attempt.job_id]
            t = job.tasks[attempt.task_id]
            self._forget_attempt(attempt)
            change.attempt_updates.append(
                AttemptUpdate(id=attempt.id, state=ATTEMPT_LOST, ended=now, error="worker lost")
            )
            if job.state == JOB_RUNNING and t.state == TASK_RUNNING:
                self._task_failed(job, t, now, "worker lost", change)
        for worker_id in lost:
            self._cancels.pop(worker_id, None)
        if change:
            await self._db.write(job_queries.apply_change_thd, change)

    async def give_back(self, worker_id: str, attempt_ids: Iterable[str]) -> None:
        """A stopping worker returns attempts: they run again without counting as failures."""
        now = self._reactor.seconds()
        change = Change()
        for attempt_id in attempt_ids:
            attempt = self.attempt_of(attempt_id, worker_id)
            if attempt is None:
                continue
            job = self.jobs[attempt.job_id]
            t = job.tasks[attempt.task_id]
            self._forget_attempt(attempt)
            change.attempt_updates.append(
                AttemptUpdate(
                    id=attempt_id, state=ATTEMPT_GIVEN_BACK, ended=now, error="given back"
                )
            )
            if t.state == TASK_RUNNING and not t.running:
                self._make_ready(job, t)
                change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), {"state": TASK_READY}))
        if change:
            await self._db.write(job_queries.apply_change_thd, change)

    def cancels_for(self, worker_id: str, reported: Iterable[str]) -> list[str]:
        """Attempts the worker must kill: cancelled ones, and any it runs that we do not know."""
        cancel = self._cancels.pop(worker_id, set())
        for attempt_id in reported:
            attempt = self.attempts.get(attempt_id)
            if attempt is None or attempt.worker_id != worker_id:
                cancel.add(attempt_id)
        return sorted(cancel)

    def running_on(self, worker_id: str) -> list[str]:
        return [a.id for a in self.attempts.values() if a.worker_id == worker_id]

    def counts(self) -> Mapping[str, int]:
        """Tasks in memory by state, for the operator's view."""
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            for t in job.tasks.values():
                counts[t.state] = counts.get(t.state, 0) + 1
        return counts
