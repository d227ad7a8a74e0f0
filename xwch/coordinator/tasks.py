"""The tasks' manager: jobs, their DAGs, the blocked and ready tasks, and every attempt.

State lives in memory for speed and every change is written to the store before the request
that caused it is answered. The order is always: decide and apply in memory (on the reactor
thread, so decisions never interleave), queue the write (the store has one writer thread, so
writes land in decision order), then answer when the write has committed.

Task states follow docs/cli.md: ``blocked`` until every task it depends on is done, then
``ready``; ``running`` while an attempt holds it; ``done``; ``failed`` once a failure finds no
retry left; ``cancelled``. A job is done when every task is; it fails as soon as one task fails
for good, and its other tasks are then cancelled.

Failure handling: a failed or lost attempt is relaunched after a back-off while retries last; a
task failing on ``POISON_WORKERS`` distinct workers fails for good; the first successful attempt
of a task wins and the others are cancelled; a late success of an attempt presumed lost still
counts if its task is unfinished; a ready task whose input has no copy left at any warehouse
sends the task that produced it back to run (lineage), and a lost upload of the client fails the
job with a message saying so.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch import dag
from xwch.coordinator import trust
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.endings import JobEndings
from xwch.coordinator.health import WorkerHealth
from xwch.coordinator.lineages import NEW_LINEAGE
from xwch.coordinator.prefetch import Prefetcher
from xwch.coordinator.reliability import Reliability
from xwch.coordinator.replicated import ReplicatedTasks
from xwch.coordinator.replication import Replicas
from xwch.coordinator.scheduler import ReadyTask, Scheduler, TaskKey, WorkerView
from xwch.coordinator.speculation import Stragglers
from xwch.coordinator.unrunnable import unrunnable_tasks, untrusted_tasks
from xwch.errors import XwchError
from xwch.protocol.objects import InputFile
from xwch.protocol.wire import (
    ATTEMPT_CANCELLED,
    ATTEMPT_FAILED,
    ATTEMPT_GIVEN_BACK,
    ATTEMPT_LOST,
    ATTEMPT_RUNNING,
    ATTEMPT_SUCCEEDED,
    JOB_CANCELLED,
    JOB_DONE,
    JOB_ENDED_STATES,
    JOB_FAILED,
    JOB_RUNNING,
    OUTCOME_SUCCEEDED,
    TASK_ASSIGNED,
    TASK_BLOCKED,
    TASK_CANCELLED,
    TASK_DONE,
    TASK_FAILED,
    TASK_READY,
    TASK_RUNNING,
)
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import reliability as reliability_queries
from xwch.store.database import Database
from xwch.store.group_locks import Fence, NotHeld
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

if TYPE_CHECKING:
    from xwch.coordinator.checkpoints import CheckpointBook

T = TypeVar("T")


# Whether a worker id belongs to the caller's token (a lost worker that registered again
# speaks for its old attempts).
SameOwner = Callable[[str], bool]


def _nothing_thd(_conn: object) -> None:
    """A write that writes nothing: it commits after every write asked for before it."""


def _nobody(_worker_id: str) -> bool:
    return False


class MissingObjects(XwchError):
    """Objects a request refers to are not stored at any warehouse."""

    def __init__(self, digests: Sequence[str]) -> None:
        self.digests = list(digests)
        super().__init__(
            f"{len(self.digests)} object(s) are not stored at any warehouse: upload them first"
        )


class Dropped(XwchError):
    """A change decided by a tasks' manager whose memory was dropped (see close)."""


class NotYourAttempt(XwchError):
    """A worker spoke of an attempt given to another worker."""


class BadResult(XwchError):
    """A Work Result that cannot be right (outputs that were not declared, or missing)."""


class UnknownJob(XwchError):
    """No job has this id."""


class JobStillRunning(XwchError):
    """Only an ended job can be retried."""


@dataclass
class Attempt:
    id: str
    job_id: str
    task_id: str
    number: int
    worker_id: str
    started: float
    # A duplicate of a slow attempt near the end of its job (see speculation.py): the first
    # of the two to succeed wins; neither is a "duplicate" for the scanner to repair.
    speculative: bool = False
    # Whether its worker said it started (a worker holds attempts ahead of its free slots):
    # until then its task is "assigned" in the store, not "running".
    begun: bool = False
    # The checkpoint lineage it continues: a replica's own (lineages.py), else 0.
    lineage: int = 0


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
    # Workers on which an attempt of this task failed (not merely lost).
    failed_on: set[str] = field(default_factory=set)
    # A relaunch waits until then (back-off); None: no wait.
    relaunch: IDelayedCall | None = None


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
    # Ids of its running attempts (for stragglers: a job near its end has few).
    running_attempts: set[str] = field(default_factory=set)
    stragglers: Stragglers = field(default_factory=Stragglers)
    # What the job was told while it ran (a result found wrong after others had read it):
    # its message in ``status``, kept when it ends done.
    note: str | None = None


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

    # A task failing on this many distinct workers is not the workers' fault.
    POISON_WORKERS = 3
    # Relaunch back-off: 1 s after the first failure, doubling, at most a minute.
    RELAUNCH_BACKOFF = 1.0
    RELAUNCH_BACKOFF_MAX = 60.0

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        catalog: Catalog,
        scheduler: Scheduler,
        health: WorkerHealth | None = None,
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._catalog = catalog
        self.scheduler = scheduler
        self.health = health or WorkerHealth(reactor)
        self.jobs: dict[str, JobState] = {}
        self.attempts: dict[str, Attempt] = {}
        # Attempts of workers declared lost: their late success may still count.
        self.presumed_lost: dict[str, Attempt] = {}
        # Attempts a worker must kill, told in its next Work Alive reply.
        self._cancels: dict[str, set[str]] = {}
        self._job_order = itertools.count()
        # Whether idle workers race stragglers near a job's end (see speculation.py).
        self.speculate = True
        # Ids of the running attempts of each worker (what its Work Alive should list).
        self._by_worker: dict[str, set[str]] = {}
        # Moves waiting tasks' inputs to where they will run (locality policy only).
        self.prefetcher: Prefetcher | None = None
        # Called whenever a task becomes ready (Work Requests waiting for work try again).
        self.on_ready: list[Callable[[], None]] = []
        # Callers waiting for a job to end, and the jobs ended whose end is not stored yet.
        self.endings = JobEndings(reactor)
        self.ending: set[str] = set()
        # With several coordinators on one store: the group lock every change is made under
        # (None: this coordinator is the store's only one). A change it no longer holds is
        # refused by the store, and each of ``on_fenced`` is told (the member steps down).
        self.fence: Fence | None = None
        self.on_fenced: list[Callable[[NotHeld], None]] = []
        # Told of any other change that could not be written (the store unreachable): memory
        # is then ahead of the store, and whoever owns this manager rebuilds it from the store.
        self.on_unwritten: list[Callable[[BaseException], None]] = []
        self._closed = False
        # The tasks' checkpoints (checkpoints.py), which set themselves here.
        self.checkpoints: CheckpointBook | None = None
        # Tasks whose results are checked by replication (quorum), and workers' reliability.
        self.replicated = ReplicatedTasks(self, Replicas(Reliability()))

    def _fence(self) -> tuple[Fence | None, float]:
        return self.fence, self._reactor.seconds()

    def close(self) -> None:
        """No more changes: this manager's memory was dropped (its member lost the lead, or
        rebuilds it from the store); a request still under way must not write what it decided
        from it."""
        self._closed = True
        self.on_fenced.clear()
        self.on_unwritten.clear()

    def _record(self, change: Change) -> Deferred[None]:
        """Write one decision to the store, under this member's fence."""
        return self._write(job_queries.apply_change_thd, change)

    def write(self, fn: Callable[..., T], *args: object) -> Deferred[T]:
        """A write of a collaborator (checkpoints) on this manager's path: in decision order,
        under its fence."""
        return self._write(fn, *args)

    def job_objects(self, job: JobState) -> set[str]:
        """The objects a running job names: its files, binaries and its tasks' outputs."""
        digests = _job_digests(job.spec)
        for t in job.tasks.values():
            digests.update(d for d, _size in t.outputs.values())
        return digests

    def _write(self, fn: Callable[..., T], *args: object) -> Deferred[T]:
        """``fn(conn, *args, fence, now)`` on the writer thread; its failure told to whoever
        listens (see ``on_fenced`` and ``on_unwritten``)."""
        if self._closed:
            return fail(Dropped("this coordinator's memory was dropped; ask again"))
        return self._fenced(self._db.write(fn, *args, *self._fence()))

    def _fenced(self, written: Deferred[T]) -> Deferred[T]:

        def refused(failure: Failure) -> Failure:
            error = failure.value
            assert error is not None
            if isinstance(error, NotHeld):
                for listener in list(self.on_fenced):
                    listener(error)
            else:
                for unwritten in list(self.on_unwritten):
                    unwritten(error)
            return failure

        return written.addErrback(refused)

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
            # The wire form just checked, as sent: parsed again the same way on a restart.
            spec=json.dumps(wire, separators=(",", ":")),
        )
        await self._write(job_queries.create_job_thd, row, new_tasks)
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
        inputs = self._known_inputs(job, task)
        if self.prefetcher is not None:
            self.prefetcher.waiting((job.id, task.spec.id), inputs)
        self.scheduler.add_ready(
            ReadyTask(
                key=(job.id, task.spec.id),
                owner=job.owner,
                priority=job.priority,
                job_order=job.order,
                position=task.position,
                platforms=job.platforms[task.spec.binary],
                cost=task.spec.cost,
                inputs=tuple(inputs),
            )
        )
        for listener in self.on_ready:
            listener()

    def _known_inputs(self, job: JobState, task: TaskState) -> list[tuple[str, int]]:
        """(digest, size) of the task's inputs that exist: all of them once it is ready."""
        inputs = []
        for ref in task.spec.inputs:
            found = self._input_digest(job, ref)
            if found is not None:
                inputs.append(found)
        return inputs

    def _make_ready_later(self, job: JobState, t: TaskState) -> None:
        """Ready again after the relaunch back-off; stays ``ready`` for users meanwhile."""
        t.state = TASK_READY
        delay = min(self.RELAUNCH_BACKOFF * 2 ** max(t.failures - 1, 0), self.RELAUNCH_BACKOFF_MAX)

        def relaunch() -> None:
            t.relaunch = None
            if self.jobs.get(job.id) is job and t.state == TASK_READY and not t.running:
                self._make_ready(job, t)

        if t.relaunch is not None and t.relaunch.active():
            t.relaunch.cancel()
        t.relaunch = self._reactor.callLater(delay, relaunch)

    def _restore(self, r: RecoveredJob) -> JobState:
        """A job's memory from what the store has."""
        job = dag.parse_wire_job(json.loads(r.row.spec))
        state = self._build(r.row.id, job, r.row.owner, order=next(self._job_order))
        state.priority = r.row.priority
        for saved in r.tasks:
            t = state.tasks[saved.task_id]
            # "assigned" is the store's word for a running task whose attempt has not begun.
            t.state = TASK_RUNNING if saved.state == TASK_ASSIGNED else saved.state
            t.failures = saved.failures
            t.attempts = saved.attempts
            t.outputs = dict(saved.outputs)
        for t in state.tasks.values():
            t.waiting = sum(
                1 for dep in t.spec.dependencies() if state.tasks[dep].state != TASK_DONE
            )
        state.remaining = sum(1 for t in state.tasks.values() if t.state != TASK_DONE)
        return state

    async def recover(self) -> None:
        """Rebuild memory from the store after a (re)start: every running job resumes."""
        records = await self._db.read(reliability_queries.load_records_thd)
        self.replicated.replicas.reliability = Reliability(records)
        recovered: list[RecoveredJob] = await self._db.read(job_queries.recover_running_jobs_thd)
        for r in recovered:
            state = self._restore(r)
            stored = {t.task_id: t.state for t in r.tasks}
            for a in r.running:
                attempt = Attempt(
                    a.id,
                    r.row.id,
                    a.task_id,
                    a.number,
                    a.worker_id,
                    a.started,
                    a.speculative,
                    lineage=a.lineage,
                )
                attempt.begun = stored.get(a.task_id) == TASK_RUNNING
                self._attempt_started(state, attempt)
            self.jobs[state.id] = state
            for t in state.tasks.values():
                if t.state == TASK_READY or (t.state == TASK_RUNNING and not t.running):
                    self._make_ready(state, t)
            self.log.info("job {job} resumed: {n} tasks left", job=state.id, n=state.remaining)

    async def retry(self, job_id: str) -> None:
        """Run again the failed and cancelled tasks of an ended job, keeping what is done."""
        if job_id in self.jobs:
            raise JobStillRunning(f"job {job_id} is still running")
        r = await self._db.read(job_queries.recover_job_thd, job_id)
        if r is None:
            raise UnknownJob(f"no job {job_id}")
        if r.row.state not in JOB_ENDED_STATES or r.row.state == JOB_DONE:
            raise JobStillRunning(
                f"job {job_id} is {r.row.state}: only a failed or cancelled job can be retried"
            )
        state = self._restore(r)
        change = Change()
        again = []
        for t in state.tasks.values():
            if t.state in (TASK_FAILED, TASK_CANCELLED, TASK_READY, TASK_RUNNING):
                t.failures = 0
                t.failed_on.clear()
                t.state = TASK_READY if t.waiting == 0 else TASK_BLOCKED
                again.append(t)
        for state_name in (TASK_READY, TASK_BLOCKED):
            ids = tuple(t.spec.id for t in again if t.state == state_name)
            if ids:
                change.task_updates.append(
                    TaskUpdate(job_id, ids, {"state": state_name, "failures": 0, "ended": None})
                )
        change.job_updates.append(JobUpdate(job_id, JOB_RUNNING, None, None))
        await self._record(change)
        self._adopt(state)
        self.log.info("job {job} retried: {n} tasks run again", job=job_id, n=len(again))

    async def cancel(self, job_id: str) -> bool:
        """Stop a job: no new attempts, running ones are killed. False if it had ended."""
        job = self.jobs.get(job_id)
        if job is None or job.state != JOB_RUNNING:
            return False
        change = Change()
        self._end_job(job, JOB_CANCELLED, "cancelled by the user", change)
        await self._record(change)
        return True

    def _end_job(self, job: JobState, state: str, message: str | None, change: Change) -> None:
        """End a job: every task not done is cancelled (unless it failed) and forgotten."""
        now = self._reactor.seconds()
        job.state = state
        to_cancel = []
        for t in job.tasks.values():
            if t.relaunch is not None and t.relaunch.active():
                t.relaunch.cancel()
            if t.state in (TASK_DONE, TASK_FAILED, TASK_CANCELLED):
                continue
            self.scheduler.remove((job.id, t.spec.id))
            self._cancel_running(t, now, "job ended", change)
            t.state = TASK_CANCELLED
            to_cancel.append(t.spec.id)
        if to_cancel:
            change.task_updates.append(
                TaskUpdate(job.id, tuple(to_cancel), {"state": TASK_CANCELLED, "ended": now})
            )
        change.job_updates.append(JobUpdate(job.id, state, now, message or job.note))
        if self.checkpoints is not None:
            self.checkpoints.tasks_over(job.id)
        del self.jobs[job.id]
        self.scheduler.job_ended(job.id)
        self.replicated.forget_job(job.id)
        self.ending.add(job.id)
        self._reactor.callLater(0, self._announce_end, job.id)
        if self.prefetcher is not None:
            self.prefetcher.forget_job(job.id)
        for attempt_id in [a for a, att in self.presumed_lost.items() if att.job_id == job.id]:
            del self.presumed_lost[attempt_id]
        self.log.info(
            "job {job} {state}{message}",
            job=job.id,
            state=state,
            message=f": {message}" if message else "",
        )

    def _announce_end(self, job_id: str) -> None:
        """Tell whoever waits for the job's end, once the end is committed: this write is
        queued after the one that ended the job (asked for in the turn that ended it), and the
        store commits writes in order."""
        self._db.write(_nothing_thd).addBoth(lambda _: self._announced(job_id))

    def _announced(self, job_id: str) -> None:
        self.ending.discard(job_id)
        self.endings.ended(job_id)

    def _cancel_running(self, t: TaskState, now: float, why: str, change: Change) -> None:
        """Tell the workers running attempts of ``t`` to kill them."""
        for attempt_id in sorted(t.running):
            attempt = self.attempts.pop(attempt_id)
            self._attempt_ended(attempt)
            self._cancels.setdefault(attempt.worker_id, set()).add(attempt_id)
            change.attempt_updates.append(
                AttemptUpdate(id=attempt_id, state=ATTEMPT_CANCELLED, ended=now, error=why)
            )
        t.running.clear()

    # Attempts

    async def assign(
        self,
        worker: WorkerView,
        worker_name: str,
        site: str | None,
        slots: int,
        workers_alive: int = 1,
        idle_slots: int | None = None,
    ) -> list[Assignment]:
        """Start attempts of the most appropriate ready tasks for a worker's Work Request.

        ``idle_slots``: how many of ``slots`` have nothing to run (None: all); the others are
        asked for ahead, and get no duplicate of a straggler, which would wait there.
        """
        if (
            slots <= 0
            or self.health.is_quarantined(worker.id)
            or self.replicated.replicas.distrusted(worker.id)
        ):
            return []
        lineage = Change()
        # The checkpoint lineage each picked task's attempt continues, as found when picked.
        lineages: dict[TaskKey, int] = {}

        def accept(key: TaskKey) -> bool:
            job = self.jobs[key[0]]
            t = job.tasks[key[1]]
            # A worker that trusts keys gets only programs signed by one of them.
            binary = job.spec.binaries[t.spec.binary]
            if not trust.worker_accepts(worker.platform, worker.trusted_keys, binary):
                return False
            # A task that failed here goes to another worker while one has not failed it.
            if worker.id in t.failed_on and len(t.failed_on) < workers_alive:
                return False
            continued = self.replicated.lineage_for(self.jobs[key[0]], t, worker.id)
            if continued is None:
                return False
            lineages[key] = continued
            return self._inputs_present(key, lineage)

        picked = self.scheduler.pick(worker, slots, accept=accept)
        if lineage:
            await self._record(lineage)
        # Nothing (or not enough) is ready: an idle slot may race a straggler.
        idle = slots if idle_slots is None else min(slots, idle_slots)
        duplicates = self._stragglers_for(worker, idle - len(picked)) if self.speculate else []
        if not picked and not duplicates:
            return []
        now = self._reactor.seconds()
        change = Change()
        started: list[Attempt] = []
        for (job_id, task_id), speculative in itertools.chain(
            ((key, False) for key in picked), ((key, True) for key in duplicates)
        ):
            job = self.jobs[job_id]
            t = job.tasks[task_id]
            t.attempts += 1
            t.state = TASK_RUNNING
            attempt = Attempt(
                "a" + secrets.token_hex(8),
                job_id,
                task_id,
                t.attempts,
                worker.id,
                now,
                speculative=speculative,
                lineage=0 if speculative else lineages.get((job_id, task_id), 0),
            )
            if attempt.lineage == NEW_LINEAGE:
                # Named after the attempt that opens it: attempt numbers never repeat.
                attempt.lineage = attempt.number
            # A picked task already counts as running for the scheduler; a duplicate does not.
            self._attempt_started(job, attempt, tell_scheduler=speculative)
            self.replicated.started(job, t, worker.id)
            started.append(attempt)
            if self.prefetcher is not None:
                self.prefetcher.started((job_id, task_id))
            if speculative:
                self.log.info(
                    "task {task} of job {job} is slow: attempt {attempt} races it on {worker}",
                    task=task_id,
                    job=job_id,
                    attempt=attempt.id,
                    worker=worker_name,
                )
            change.new_attempts.append(
                NewAttempt(
                    attempt.id,
                    job_id,
                    task_id,
                    attempt.number,
                    worker.id,
                    worker_name,
                    now,
                    speculative=speculative,
                    lineage=attempt.lineage,
                )
            )
            change.task_updates.append(
                TaskUpdate(
                    job_id,
                    (task_id,),
                    {
                        "state": TASK_ASSIGNED,
                        "attempts": t.attempts,
                        "worker": worker_name,
                        "started": None,
                        "ended": None,
                    },
                )
            )
        try:
            await self._record(change)
        except Exception:
            # Not durable, so not given: the tasks are ready again for the next request.
            for attempt in started:
                self._forget_attempt(attempt)
                owner = self.jobs.get(attempt.job_id)
                if owner is not None:
                    t = owner.tasks[attempt.task_id]
                    t.attempts -= 1
                    if not t.running and not attempt.speculative:
                        self._make_ready(owner, t)
            raise
        for a in started:
            if a.id in self.attempts:
                self.replicated.given(a)
        given = [self._assignment(a, worker, site) for a in started if a.id in self.attempts]
        for assignment in given:
            # The worker fetches them into its cache: tasks reading them are best run there.
            self.scheduler.objects_cached(
                worker.id, [assignment.binary.digest, *(i.digest for i in assignment.inputs)]
            )
        return given

    def _stragglers_for(self, worker: WorkerView, free: int) -> list[TaskKey]:
        """Slow attempts ``worker`` could race, slowest first, in jobs whose every unfinished
        task is running (near their end); at most one duplicate per task."""
        if free <= 0:
            return []
        now = self._reactor.seconds()
        found: list[tuple[float, TaskKey]] = []
        for job in self.jobs.values():
            if job.state != JOB_RUNNING or job.remaining > len(job.running_attempts):
                continue
            for attempt_id in job.running_attempts:
                attempt = self.attempts[attempt_id]
                t = job.tasks[attempt.task_id]
                platforms = job.platforms[t.spec.binary]
                if (
                    len(t.running) != 1
                    or t.spec.replication is not None
                    or attempt.worker_id == worker.id
                    or worker.id in t.failed_on
                    or (platforms is not None and worker.platform not in platforms)
                    or not trust.worker_accepts(
                        worker.platform, worker.trusted_keys, job.spec.binaries[t.spec.binary]
                    )
                ):
                    continue
                slowness = job.stragglers.slowness(now - attempt.started, t.spec.cost)
                if slowness is not None:
                    found.append((slowness, (job.id, t.spec.id)))
        found.sort(reverse=True)
        return [key for _, key in found[:free]]

    def _input_digest(self, job: JobState, ref: dag.InputRef) -> tuple[str, int] | None:
        if ref.file is not None:
            entry = job.spec.files[ref.file]
            assert entry.digest is not None and entry.size is not None
            return entry.digest, entry.size
        assert ref.task is not None and ref.output is not None
        return job.tasks[ref.task].outputs.get(ref.output)

    def _inputs_present(self, key: TaskKey, change: Change) -> bool:
        """True when every input of a ready task is stored somewhere; else start lineage."""
        job = self.jobs[key[0]]
        t = job.tasks[key[1]]
        binary = job.spec.binaries[t.spec.binary]
        lost_uploads = []
        # A binary built for one platform only is lost for everyone once its copies are gone.
        if len(binary.variants) == 1:
            [only] = binary.variants.values()
            if only.digest and not self._catalog.has(only.digest):
                lost_uploads.append(f"binary {t.spec.binary!r}")
        lost_producers: list[TaskState] = []
        for ref in t.spec.inputs:
            found = self._input_digest(job, ref)
            if found is not None and self._catalog.has(found[0]):
                continue
            if ref.file is not None:
                lost_uploads.append(f"file {ref.file!r}")
            else:
                assert ref.task is not None
                lost_producers.append(job.tasks[ref.task])
        if not lost_uploads and not lost_producers:
            return True
        now = self._reactor.seconds()
        if lost_uploads:
            self._end_job(
                job,
                JOB_FAILED,
                f"input {lost_uploads[0]} uploaded by the client is lost: no warehouse holding "
                "it answers any more; submit the job again",
                change,
            )
            return False
        for producer in lost_producers:
            self._run_again(job, producer, now, change)
        return False

    def _run_again(
        self,
        job: JobState,
        producer: TaskState,
        now: float,
        change: Change,
        why: str = "its outputs are lost",
    ) -> None:
        """Every copy of ``producer``'s outputs is gone (or they are suspect): it runs again,
        and its readers wait."""
        if producer.state != TASK_DONE:
            return  # already on its way again
        self.log.warn(
            "task {task} of job {job} runs again: {why}",
            task=producer.spec.id,
            job=job.id,
            why=why,
        )
        producer.outputs.clear()
        job.remaining += 1
        change.removed_outputs.append((job.id, producer.spec.id))
        self._make_ready(job, producer)
        change.task_updates.append(
            TaskUpdate(job.id, (producer.spec.id,), {"state": TASK_READY, "ended": None})
        )
        blocked = []
        for dependent_id in producer.dependents:
            dependent = job.tasks[dependent_id]
            if dependent.state in (TASK_READY, TASK_BLOCKED):
                dependent.waiting += 1
                if dependent.state == TASK_READY:
                    self.scheduler.remove((job.id, dependent_id))
                    dependent.state = TASK_BLOCKED
                    blocked.append(dependent_id)
        if blocked:
            change.task_updates.append(TaskUpdate(job.id, tuple(blocked), {"state": TASK_BLOCKED}))

    def _assignment(self, attempt: Attempt, worker: WorkerView, site: str | None) -> Assignment:
        job = self.jobs[attempt.job_id]
        spec = job.tasks[attempt.task_id].spec
        variant = job.spec.binaries[spec.binary].for_platform(worker.platform)
        assert variant is not None and variant.digest is not None and variant.size is not None
        inputs = []
        for ref in spec.inputs:
            found = self._input_digest(job, ref)
            assert found is not None
            inputs.append(InputFile(path=ref.local, digest=found[0], size=found[1]))
        digests = {variant.digest} | {i.digest for i in inputs}
        checkpoint = None
        if self.checkpoints is not None:
            checkpoint, saved = self.checkpoints.plan(job.id, spec, attempt.lineage)
            digests |= saved
        # Small inputs kept here travel in the assignment itself; the rest is read at warehouses.
        inline = {i.digest: c for i in inputs if (c := self._catalog.inline(i.digest)) is not None}
        return Assignment(
            attempt=attempt.id,
            job=job.id,
            task=spec.id,
            number=attempt.number,
            binary=trust.binary_ref(variant, spec.binary, job.name),
            args=tuple(spec.args),
            env=dict(spec.env),
            inputs=tuple(inputs),
            outputs=tuple(spec.outputs),
            timeout=spec.timeout,
            sources={d: self._catalog.sources(d, site) for d in sorted(digests - inline.keys())},
            upload=self._catalog.upload_target(site),
            inline=inline,
            checkpoint=checkpoint,
        )

    def _forget_attempt(self, attempt: Attempt, seconds: float | None = None) -> None:
        if self.attempts.pop(attempt.id, None) is not None:
            self._attempt_ended(attempt, seconds)
        job = self.jobs.get(attempt.job_id)
        if job is not None:
            job.tasks[attempt.task_id].running.discard(attempt.id)

    def _attempt_started(
        self, job: JobState, attempt: Attempt, tell_scheduler: bool = True
    ) -> None:
        """Hold ``attempt`` as running: in the task, the job, its worker's list, the scheduler."""
        self.attempts[attempt.id] = attempt
        job.tasks[attempt.task_id].running.add(attempt.id)
        job.running_attempts.add(attempt.id)
        self._by_worker.setdefault(attempt.worker_id, set()).add(attempt.id)
        if tell_scheduler:
            self.scheduler.attempt_started((job.id, attempt.task_id), job.owner, attempt.worker_id)

    def _attempt_ended(self, attempt: Attempt, seconds: float | None = None) -> None:
        """Tell the scheduler (fair share counts running attempts; durations teach it costs)."""
        job = self.jobs.get(attempt.job_id)
        if job is not None:
            job.running_attempts.discard(attempt.id)
        held = self._by_worker.get(attempt.worker_id)
        if held is not None:
            held.discard(attempt.id)
            if not held:
                del self._by_worker[attempt.worker_id]
        owner = job.owner if job is not None else -1
        cost = job.tasks[attempt.task_id].spec.cost if job is not None else 1.0
        self.scheduler.attempt_ended(
            (attempt.job_id, attempt.task_id), owner, attempt.worker_id, seconds, cost
        )

    def attempt_of(self, attempt_id: str, worker_id: str) -> Attempt | None:
        """The running attempt, if it is still current; raises if another worker holds it."""
        attempt = self.attempts.get(attempt_id)
        if attempt is not None and attempt.worker_id != worker_id:
            self.log.warn(
                "worker {worker} spoke of attempt {attempt} of worker {holder}: refused",
                worker=worker_id,
                attempt=attempt_id,
                holder=attempt.worker_id,
            )
            raise NotYourAttempt(f"attempt {attempt_id} was not given to this worker")
        return attempt

    def _late_attempt(
        self, attempt_id: str, worker_id: str, same_owner: SameOwner
    ) -> Attempt | None:
        """An attempt presumed lost, now heard of again from its worker (under a new id)."""
        lost = self.presumed_lost.get(attempt_id)
        if lost is None:
            return None
        if lost.worker_id != worker_id and not same_owner(lost.worker_id):
            raise NotYourAttempt(f"attempt {attempt_id} was not given to this worker")
        job = self.jobs.get(lost.job_id)
        if (
            job is None
            or job.tasks[lost.task_id].state in (TASK_DONE, TASK_FAILED, TASK_CANCELLED)
            or self.replicated.continued_since(job, job.tasks[lost.task_id], lost)
        ):
            del self.presumed_lost[attempt_id]
            return None
        return lost

    async def record_result(
        self, worker_id: str, result: AttemptResult, same_owner: SameOwner = _nobody
    ) -> bool:
        """Take a Work Result. False when it no longer counts (the result is discarded)."""
        attempt = self.attempt_of(result.attempt, worker_id)
        succeeded = result.outcome == OUTCOME_SUCCEEDED
        late = False
        if attempt is None:
            attempt = self._late_attempt(result.attempt, worker_id, same_owner)
            # A late failure changes nothing: the loss was already counted.
            if attempt is None or not succeeded:
                return False
            late = True
        job = self.jobs[attempt.job_id]
        t = job.tasks[attempt.task_id]
        if succeeded:
            names = [o.name for o in result.outputs]
            if sorted(names) != sorted(t.spec.outputs):
                raise BadResult(
                    f"outputs {sorted(names)} do not match the task's declared outputs "
                    f"{sorted(t.spec.outputs)}"
                )
            missing = self._catalog.missing(o.digest for o in result.outputs if o.content is None)
            if missing:
                raise MissingObjects(missing)
            if t.spec.replication is not None:
                self.replicated.check(job, t, worker_id)
        now = self._reactor.seconds()
        change = Change()
        if late:
            del self.presumed_lost[attempt.id]
            self.log.info(
                "late result of attempt {attempt} (task {task}) accepted",
                attempt=attempt.id,
                task=t.spec.id,
            )
        self._forget_attempt(attempt, result.duration if succeeded else None)
        lineage_over = 0
        # It ran between two Work Alives: it started then, by its own account (written with
        # the task's end when it succeeded: one row update fewer a task).
        started = None if attempt.begun else now - result.duration
        if started is not None and not succeeded:
            change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), {"started": started}))
        change.attempt_updates.append(
            AttemptUpdate(
                id=attempt.id,
                state=ATTEMPT_SUCCEEDED if succeeded else ATTEMPT_FAILED,
                ended=now,
                exit_code=result.exit_code,
                error=result.error,
                stdout=result.stdout,
                stderr=result.stderr,
                worker_id=worker_id if worker_id != attempt.worker_id else None,
            )
        )
        if self.replicated.is_comparison(job, t) and result.exit_code is not None:
            # A compare program's exit status is its answer, not a failure.
            self.replicated.compared(job, t, succeeded, now, change)
        elif succeeded and t.spec.replication is not None:
            self.health.succeeded(worker_id)
            self.replicated.take_result(job, t, attempt, worker_id, result, now, change, started)
            lineage_over = attempt.lineage
        elif succeeded:
            job.stragglers.finished(result.duration, t.spec.cost)
            self.health.succeeded(worker_id)
            change.tasks_done_by_worker[worker_id] = 1
            t.outputs = {o.name: (o.digest, o.size) for o in result.outputs}
            # Small outputs came in the result: kept here, written with the result.
            inline = {o.digest: o.content for o in result.outputs if o.content is not None}
            if inline:
                self._catalog.hold_inline(inline)
                change.inline_objects.update(inline)
            # The worker keeps its outputs in its cache: their readers are best run there.
            self.scheduler.objects_cached(worker_id, [o.digest for o in result.outputs])
            change.outputs.extend(
                OutputRow(job.id, t.spec.id, o.name, o.digest, o.size) for o in result.outputs
            )
            self._task_done(job, t, now, change, started)
        else:
            self.health.failed(worker_id)
            t.failed_on.add(worker_id)
            reason = result.error or f"exit status {result.exit_code}"
            self._task_failed(job, t, now, reason, change)
        await self._record(change)
        if lineage_over and self.checkpoints is not None:
            # No attempt continues this replica's lineage any more; dropped once its result is
            # recorded, lest a coordinator dying in between lose both.
            self.checkpoints.lineage_over(job.id, t.spec.id, lineage_over)
        return True

    def _task_done(
        self, job: JobState, t: TaskState, now: float, change: Change, started: float | None = None
    ) -> None:
        if t.relaunch is not None and t.relaunch.active():
            t.relaunch.cancel()
        self.scheduler.remove((job.id, t.spec.id))
        # The first result wins: any other attempt of the task is now useless.
        self._cancel_running(t, now, "another attempt finished first", change)
        t.state = TASK_DONE
        job.remaining -= 1
        if self.checkpoints is not None:
            self.checkpoints.tasks_over(job.id, [t.spec.id])
        values: dict[str, object] = {"state": TASK_DONE, "ended": now}
        if started is not None:
            values["started"] = started
        change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), values))
        newly_ready = []
        for dependent_id in t.dependents:
            dependent = job.tasks[dependent_id]
            dependent.waiting -= 1
            if dependent.waiting == 0 and dependent.state == TASK_BLOCKED:
                self._make_ready(job, dependent)
                newly_ready.append(dependent_id)
            elif self.prefetcher is not None and dependent.state == TASK_BLOCKED:
                # Still waiting for others: its inputs may start towards it now.
                self.prefetcher.waiting((job.id, dependent_id), self._known_inputs(job, dependent))
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
        if t.running:
            # Another attempt of the task is still running: it may yet succeed.
            change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), {"failures": t.failures}))
            # A replicated task wants a replica in place of this one.
            self.replicated.offer(job, t)
            return
        poisoned = len(t.failed_on) >= self.POISON_WORKERS
        if t.failures <= t.spec.retries and not poisoned:
            self._make_ready_later(job, t)
            change.task_updates.append(
                TaskUpdate(job.id, (t.spec.id,), {"state": TASK_READY, "failures": t.failures})
            )
            self.log.info(
                "task {task} of job {job} failed ({reason}); relaunching "
                "({n} of {retries} retries used)",
                task=t.spec.id,
                job=job.id,
                reason=reason,
                n=t.failures,
                retries=t.spec.retries,
            )
            return
        if poisoned:
            why = f"failed on {len(t.failed_on)} different workers"
        else:
            why = "failed after " + ("1 attempt" if t.failures == 1 else f"{t.failures} attempts")
        self.fail_for_good(job, t, now, f"{why}: {reason}", change)

    def fail_for_good(
        self, job: JobState, t: TaskState, now: float, why: str, change: Change
    ) -> None:
        """``t`` fails with no retry, and its job with it."""
        if t.relaunch is not None and t.relaunch.active():
            t.relaunch.cancel()
        self.scheduler.remove((job.id, t.spec.id))
        self._cancel_running(t, now, "its task failed", change)
        t.state = TASK_FAILED
        change.task_updates.append(
            TaskUpdate(
                job.id, (t.spec.id,), {"state": TASK_FAILED, "failures": t.failures, "ended": now}
            )
        )
        self._end_job(job, JOB_FAILED, f"task {t.spec.id} {why}", change)

    # Hooks of replicated tasks (replicated.py)

    task_done = _task_done
    run_again = _run_again

    def tell_job(self, job: JobState, note: str, change: Change) -> None:
        """Say something about a running job in its ``status`` (and keep it at its end)."""
        job.note = note
        change.job_updates.append(JobUpdate(job.id, JOB_RUNNING, None, note))

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def offer_replica(self, job: JobState, t: TaskState) -> None:
        """Ready for one more replica while others run: the task stays ``running``."""
        if self.scheduler.is_ready((job.id, t.spec.id)):
            return
        self._make_ready(job, t)
        t.state = TASK_RUNNING

    # Hooks of replicated tasks, continued: a comparison (replicated.py) is a task that lives in
    # memory only, beside the job's tasks.

    make_ready = _make_ready
    cancel_running = _cancel_running

    @property
    def reactor(self) -> IReactorTime:
        return self._reactor

    def write_unawaited(self, fn: Callable[..., object], *args: object) -> None:
        """``fn`` on the writer thread, after the writes queued before it; nothing waits for
        it, so its failure is logged here."""
        if not self._closed:
            self._write(fn, *args).addErrback(
                lambda f: self.log.failure("{fn} failed", f, fn=fn.__name__)
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
            self.presumed_lost[attempt.id] = attempt
            change.attempt_updates.append(
                AttemptUpdate(id=attempt.id, state=ATTEMPT_LOST, ended=now, error="worker lost")
            )
            if job.state == JOB_RUNNING and t.state == TASK_RUNNING:
                self._task_failed(job, t, now, "worker lost", change)
        for worker_id in lost:
            self._cancels.pop(worker_id, None)
            self.health.forget(worker_id)
            self.scheduler.worker_gone(worker_id)
        if change:
            await self._record(change)

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
            else:
                # A replicated task wants a replica in place of this one (its other replicas
                # run on).
                self.replicated.offer(job, t)
        if change:
            await self._record(change)

    async def alive(
        self,
        worker_id: str,
        reported: Iterable[str],
        same_owner: SameOwner = _nobody,
        grace: float = 30.0,
        waiting: Iterable[str] = (),
    ) -> list[str]:
        """A Work Alive: the attempts the worker must kill.

        ``waiting``: those of ``reported`` it holds ahead, not started yet; the tasks of the
        others are running from now on, if they were only assigned.

        Those are the cancelled ones, and any it runs that the coordinator does not know —
        except an attempt presumed lost whose task is unfinished: a worker back from an outage
        keeps it (the scanner keeps one attempt if the task was relaunched meanwhile).

        An attempt given to this worker more than ``grace`` seconds ago that it does not list
        never reached it (the answer carrying it was lost): its task runs again, with no
        failure counted, and a late result of it still counts.
        """
        cancel = self._cancels.pop(worker_id, set())
        change = Change()
        reported = list(reported)
        self._reclaim_unclaimed(worker_id, set(reported), grace, change)
        not_begun = set(waiting)
        now = self._reactor.seconds()
        for attempt_id in reported:
            attempt = self.attempts.get(attempt_id)
            if attempt is not None and attempt.worker_id == worker_id:
                if not attempt.begun and attempt_id not in not_begun:
                    attempt.begun = True
                    change.task_updates.append(
                        TaskUpdate(
                            attempt.job_id,
                            (attempt.task_id,),
                            {"state": TASK_RUNNING, "started": now},
                        )
                    )
                continue
            late = (
                None
                if attempt is not None
                else self._late_attempt(attempt_id, worker_id, same_owner)
            )
            if late is None:
                cancel.add(attempt_id)
                continue
            self._readopt(late, worker_id, change)
        if change:
            await self._record(change)
        return sorted(cancel)

    def _reclaim_unclaimed(
        self, worker_id: str, listed: set[str], grace: float, change: Change
    ) -> None:
        now = self._reactor.seconds()
        for attempt_id in sorted(self._by_worker.get(worker_id, set()) - listed):
            attempt = self.attempts[attempt_id]
            if now - attempt.started <= grace:
                continue  # its assignment may still be on its way
            job = self.jobs[attempt.job_id]
            t = job.tasks[attempt.task_id]
            self._forget_attempt(attempt)
            self.presumed_lost[attempt.id] = attempt
            change.attempt_updates.append(
                AttemptUpdate(
                    id=attempt.id,
                    state=ATTEMPT_LOST,
                    ended=now,
                    error="its worker never received it",
                )
            )
            self.log.warn(
                "attempt {attempt} of task {task} never reached worker {worker}; "
                "running the task again",
                attempt=attempt.id,
                task=t.spec.id,
                worker=worker_id,
            )
            if t.state == TASK_RUNNING and not t.running:
                self._make_ready(job, t)
                change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), {"state": TASK_READY}))
            else:
                self.replicated.offer(job, t)

    def _readopt(self, attempt: Attempt, worker_id: str, change: Change) -> None:
        del self.presumed_lost[attempt.id]
        job = self.jobs[attempt.job_id]
        t = job.tasks[attempt.task_id]
        attempt.worker_id = worker_id
        self._attempt_started(job, attempt)
        self.replicated.readopted(job, t, attempt)
        if t.state == TASK_READY:
            if t.relaunch is not None and t.relaunch.active():
                t.relaunch.cancel()
            self.scheduler.remove((job.id, t.spec.id))
            t.state = TASK_RUNNING
            change.task_updates.append(TaskUpdate(job.id, (t.spec.id,), {"state": TASK_RUNNING}))
        change.attempt_updates.append(
            AttemptUpdate(id=attempt.id, state=ATTEMPT_RUNNING, ended=None, worker_id=worker_id)
        )
        self.log.info(
            "attempt {attempt} of task {task} is running again on worker {worker}",
            attempt=attempt.id,
            task=t.spec.id,
            worker=worker_id,
        )

    def unrunnable(
        self,
        job_id: str,
        live_platforms: Collection[str],
        live_trust: Collection[tuple[str, frozenset[str]]] = (),
    ) -> dict[str, str]:
        """The ready tasks of a running job that no live worker can run, with why.

        ``live_trust``: each live worker's platform and trusted keys (signed programs).
        """
        job = self.jobs.get(job_id)
        if job is None:
            return {}
        ready = {t.spec.id: t.spec.binary for t in job.tasks.values() if t.state == TASK_READY}
        reasons = untrusted_tasks(ready, job.spec.binaries, live_trust)
        reasons.update(unrunnable_tasks(ready, job.platforms, live_platforms))
        return reasons

    def running_on(self, worker_id: str) -> list[str]:
        return sorted(self._by_worker.get(worker_id, ()))

    def counts(self) -> Mapping[str, int]:
        """Tasks in memory by state, for the operator's view."""
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            for t in job.tasks.values():
                counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    # Repairs, run by the scanner

    def repair_orphans(self) -> int:
        """Ready tasks nobody holds: put them back in the scheduler's ready set."""
        repaired = 0
        for job in self.jobs.values():
            for t in job.tasks.values():
                waiting = t.relaunch is not None and t.relaunch.active()
                if t.state == TASK_RUNNING and not t.running:
                    self._make_ready(job, t)
                    repaired += 1
                elif t.state == TASK_RUNNING and t.spec.replication is not None:
                    # Replicas given back or never received are replaced here.
                    self.replicated.offer(job, t)
                elif (
                    t.state == TASK_READY
                    and not waiting
                    and not self.scheduler.is_ready((job.id, t.spec.id))
                ):
                    self._make_ready(job, t)
                    repaired += 1
        return repaired

    async def repair_duplicates(self) -> int:
        """Tasks held by several attempts: keep the one that started first."""
        now = self._reactor.seconds()
        change = Change()
        for job in self.jobs.values():
            for t in job.tasks.values():
                # A speculative attempt races a slow one on purpose: it is no duplicate.
                plain = {a for a in t.running if not self.attempts[a].speculative}
                # Replicas of a task run on several workers on purpose, too.
                if len(plain) < 2 or t.spec.replication is not None:
                    continue
                keep = min(plain, key=lambda a: (self.attempts[a].started, a))
                for attempt_id in sorted(plain - {keep}):
                    attempt = self.attempts.pop(attempt_id)
                    self._attempt_ended(attempt)
                    t.running.discard(attempt_id)
                    self._cancels.setdefault(attempt.worker_id, set()).add(attempt_id)
                    change.attempt_updates.append(
                        AttemptUpdate(attempt_id, ATTEMPT_CANCELLED, now, error="duplicate attempt")
                    )
        if change:
            await self._record(change)
        return len(change.attempt_updates)

    async def repair_abandoned(self, known_workers: Iterable[str]) -> int:
        """Running attempts whose worker is gone (not registered): they are lost."""
        known = set(known_workers)
        gone = {a.worker_id for a in self.attempts.values() if a.worker_id not in known}
        count = sum(1 for a in self.attempts.values() if a.worker_id in gone)
        if gone:
            await self.workers_lost(gone)
        return count
