"""The tasks' manager: jobs, their DAGs, the blocked and ready tasks, and every attempt.

State lives in memory for speed and every change is written to the store before the request
that caused it is answered. The order is always: decide and apply in memory (on the reactor
thread, so decisions never interleave), queue the write (the store has one writer thread, so
writes land in decision order), then answer when the write has committed.

Task states follow docs/cli.md: ``blocked`` until every task it depends on is done, then
``ready``; ``running`` while an attempt holds it; ``done``; ``failed`` once a failure finds no
retry left; ``cancelled``. A job is done when every task is; it fails as soon as one task fails
for good, and its other tasks are then cancelled.

Its parts, each a module of its own: the attempt ledger (attempts.py) holds the running
attempts; every change of a task's or an attempt's state goes through transitions.py, which
changes memory and the store's ``Change`` in one call; what a result or a failure does, and
lineage, is results.py; the scanner's repairs are repairs.py; an attempt's Assignment is
assignments.py. This module keeps the jobs, hands out attempts, follows workers' signals (Work
Alive, lost workers, attempts given back) and writes every decision under its fence.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch import dag
from xwch.coordinator import trust
from xwch.coordinator.assignments import assignment_for
from xwch.coordinator.attempts import Attempt, AttemptLedger, NotYourAttempt
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.endings import JobEndings
from xwch.coordinator.health import WorkerHealth
from xwch.coordinator.job_state import JobState, TaskState, platforms_of
from xwch.coordinator.lineages import NEW_LINEAGE
from xwch.coordinator.prefetch import Prefetcher
from xwch.coordinator.reliability import Reliability
from xwch.coordinator.repairs import TaskRepairs
from xwch.coordinator.replicated import ReplicatedTasks
from xwch.coordinator.replication import Replicas
from xwch.coordinator.results import TaskResults
from xwch.coordinator.scheduler import ReadyTask, Scheduler, TaskKey, WorkerView
from xwch.coordinator.speculation import stragglers_for
from xwch.coordinator.transitions import (
    attempt_begun,
    move_attempt,
    move_in_memory,
    move_tasks,
    move_to_assigned,
)
from xwch.coordinator.unrunnable import unrunnable_tasks, untrusted_tasks
from xwch.errors import XwchError
from xwch.protocol.states import ENDED_TASK_STATES, AttemptStatus, TaskStatus
from xwch.protocol.wire import (
    JOB_CANCELLED,
    JOB_DONE,
    JOB_ENDED_STATES,
    JOB_RUNNING,
    OUTCOME_SUCCEEDED,
)
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import reliability as reliability_queries
from xwch.store.database import Database
from xwch.store.group_locks import Fencing, NotHeld
from xwch.store.records import (
    Change,
    JobRow,
    JobUpdate,
    NewAttempt,
    NewTask,
    RecoveredJob,
)

if TYPE_CHECKING:
    from xwch.coordinator.checkpoints import CheckpointBook

T = TypeVar("T")

# The tasks of an ended job that ``retry`` runs again.
_RETRIED = frozenset(
    {TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.READY, TaskStatus.RUNNING}
)


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


class BadResult(XwchError):
    """A Work Result that cannot be right (outputs that were not declared, or missing)."""


class UnknownJob(XwchError):
    """No job has this id."""


class JobStillRunning(XwchError):
    """Only an ended job can be retried."""


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
        # Every running attempt, and those presumed lost or to be killed.
        self.attempts = AttemptLedger()
        self._job_order = itertools.count()
        # Whether idle workers race stragglers near a job's end (see speculation.py).
        self.speculate = True
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
        self.fence: Fencing | None = None
        self.on_fenced: list[Callable[[NotHeld], None]] = []
        # Told of any other change that could not be written (the store unreachable): memory
        # is then ahead of the store, and whoever owns this manager rebuilds it from the store.
        self.on_unwritten: list[Callable[[BaseException], None]] = []
        self._closed = False
        # The tasks' checkpoints (checkpoints.py), which set themselves here.
        self.checkpoints: CheckpointBook | None = None
        # Tasks whose results are checked by replication (quorum), and workers' reliability.
        self.replicated = ReplicatedTasks(self, Replicas(Reliability()))
        # What a task's result, or its failure, does (results.py).
        self.results = TaskResults(self)
        # What the scanner repairs (repairs.py).
        self.repairs = TaskRepairs(self)

    @property
    def closed(self) -> bool:
        """Whether this manager's memory was dropped (see :meth:`close`)."""
        return self._closed

    @property
    def groups(self) -> tuple[str, ...] | None:
        """The groups whose jobs these managers run (None: all, on a store of its own)."""
        return None if self.fence is None else self.fence.groups

    def place(self, group: str | None) -> str | None:
        """The group a new job or worker goes to: ``group`` (chosen by routing.py) if held
        here, else the first held here; None on a store of its own, whatever the caller
        asked (``?group=`` means nothing there)."""
        held = self.groups
        if held is None:
            return None
        return group if group in held else held[0]

    def _fence(self) -> tuple[Fencing | None, float]:
        return self.fence, self._reactor.seconds()

    def close(self) -> None:
        """No more changes: this manager's memory was dropped (its member lost a group, or
        rebuilds it from the store); a request still under way must not write what it decided
        from it."""
        self._closed = True
        self.on_fenced.clear()
        self.on_unwritten.clear()

    def record(self, change: Change) -> Deferred[None]:
        """Write one decision (the Change its transitions built) to the store, under this
        member's fence."""
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

    async def submit(self, wire: object, owner: int, group: str | None = None) -> str:
        """Create a job from its wire form; nothing is created if anything is wrong."""
        job = dag.parse_wire_job(wire)
        digests = _job_digests(job)
        await self._catalog.learn(digests)  # perhaps stored through another member
        missing = self._catalog.missing(digests)
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
            group=self.place(group),
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
            tasks[spec.id] = TaskState(spec=spec, position=position, state=TaskStatus.BLOCKED)
        for t in tasks.values():
            deps = t.spec.dependencies()
            t.waiting = len(deps)
            for dep in deps:
                tasks[dep].dependents.append(t.spec.id)
            if not deps:
                t.state = TaskStatus.READY  # a new task: no transition yet
        return JobState(
            id=job_id,
            name=job.name,
            owner=owner,
            priority=job.priority,
            order=order,
            spec=job,
            tasks=tasks,
            remaining=len(tasks),
            platforms={name: platforms_of(b) for name, b in job.binaries.items()},
        )

    def _adopt(self, state: JobState) -> None:
        self.jobs[state.id] = state
        for t in state.tasks.values():
            if t.state == TaskStatus.READY:
                self.queue_ready(state, t)

    def queue_ready(self, job: JobState, task: TaskState) -> None:
        """Offer a ready task (or a replicated one wanting one more replica) to workers: in the
        scheduler's ready set, its inputs on their way, waiting workers woken."""
        inputs = job.known_inputs(task)
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

    def queue_ready_later(self, job: JobState, t: TaskState) -> None:
        """Queued again after the relaunch back-off; ``ready`` for users meanwhile."""
        delay = min(self.RELAUNCH_BACKOFF * 2 ** max(t.failures - 1, 0), self.RELAUNCH_BACKOFF_MAX)

        def relaunch() -> None:
            t.relaunch = None
            if (
                self.jobs.get(job.id) is job
                and t.state == TaskStatus.READY
                and not self._attempts_of(job, t)
            ):
                self.queue_ready(job, t)

        t.stop_relaunch()
        t.relaunch = self._reactor.callLater(delay, relaunch)

    def _restore(self, r: RecoveredJob) -> JobState:
        """A job's memory from what the store has."""
        job = dag.parse_wire_job(json.loads(r.row.spec))
        state = self._build(r.row.id, job, r.row.owner, order=next(self._job_order))
        state.priority = r.row.priority
        for saved in r.tasks:
            t = state.tasks[saved.task_id]
            # Memory as the store has it, no transition: "assigned" is the store's word for a
            # running task whose attempt has not begun.
            t.state = TaskStatus.RUNNING if saved.state == TaskStatus.ASSIGNED else saved.state
            t.failures = saved.failures
            t.attempts = saved.attempts
            t.outputs = dict(saved.outputs)
        for t in state.tasks.values():
            t.waiting = sum(
                1 for dep in t.spec.dependencies() if state.tasks[dep].state != TaskStatus.DONE
            )
        state.remaining = sum(1 for t in state.tasks.values() if t.state != TaskStatus.DONE)
        return state

    async def recover(self) -> None:
        """Rebuild memory from the store after a (re)start: every running job resumes."""
        records = await self._db.read(reliability_queries.load_records_thd)
        self.replicated.replicas.reliability = Reliability(records)
        recovered: list[RecoveredJob] = await self._db.read(
            job_queries.recover_running_jobs_thd, self.groups
        )
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
                attempt.begun = stored.get(a.task_id) == TaskStatus.RUNNING
                self._attempt_started(state, attempt)
            self.jobs[state.id] = state
            for t in state.tasks.values():
                if t.state == TaskStatus.RUNNING and not self._attempts_of(state, t):
                    # Its attempts ended unrecorded: the store's row reads as ready.
                    move_in_memory(state.id, [t], TaskStatus.READY)
                if t.state == TaskStatus.READY:
                    self.queue_ready(state, t)
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
        again = [t for t in state.tasks.values() if t.state in _RETRIED]
        for t in again:
            t.failures = 0
            t.failed_on.clear()
        ready = [t for t in again if t.waiting == 0]
        blocked = [t for t in again if t.waiting != 0]
        move_tasks(job_id, ready, TaskStatus.READY, change, failures=0, ended=None)
        move_tasks(job_id, blocked, TaskStatus.BLOCKED, change, failures=0, ended=None)
        change.job_updates.append(JobUpdate(job_id, JOB_RUNNING, None, None))
        await self.record(change)
        self._adopt(state)
        self.log.info("job {job} retried: {n} tasks run again", job=job_id, n=len(again))

    async def cancel(self, job_id: str) -> bool:
        """Stop a job: no new attempts, running ones are killed. False if it had ended."""
        job = self.jobs.get(job_id)
        if job is None or job.state != JOB_RUNNING:
            return False
        change = Change()
        self.end_job(job, JOB_CANCELLED, "cancelled by the user", change)
        await self.record(change)
        return True

    def end_job(self, job: JobState, state: str, message: str | None, change: Change) -> None:
        """End a job: every task not done is cancelled (unless it failed) and forgotten."""
        now = self._reactor.seconds()
        job.state = state
        to_cancel = []
        for t in job.tasks.values():
            t.stop_relaunch()
            if t.state in ENDED_TASK_STATES:
                continue
            self.scheduler.remove((job.id, t.spec.id))
            self.cancel_running(job, t, now, "job ended", change)
            to_cancel.append(t)
        move_tasks(job.id, to_cancel, TaskStatus.CANCELLED, change, ended=now)
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
        self.attempts.job_over(job.id)
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

    def cancel_running(
        self, job: JobState, t: TaskState, now: float, why: str, change: Change
    ) -> None:
        """Tell the workers running attempts of ``t`` to kill them."""
        for attempt_id in sorted(self._attempts_of(job, t)):
            self.cancel_attempt(self.attempts[attempt_id], now, why, change)

    def cancel_attempt(self, attempt: Attempt, now: float, why: str, change: Change) -> None:
        """``attempt`` is cancelled: its worker is told to kill it at its next Work Alive."""
        self._attempt_ended(attempt)
        self.attempts.kill(attempt)
        move_attempt(attempt, AttemptStatus.CANCELLED, change, ended=now, error=why)

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
        # Producers run again because their outputs are lost (a task's inputs, looked at when
        # it is picked).
        reruns = Change()
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
            return self.results.inputs_present(key, reruns)

        picked = self.scheduler.pick(worker, slots, accept=accept)
        if reruns:
            await self.record(reruns)
        # Nothing (or not enough) is ready: an idle slot may race a straggler.
        idle = slots if idle_slots is None else min(slots, idle_slots)
        duplicates = (
            stragglers_for(
                self.jobs.values(),
                self.attempts,
                worker,
                idle - len(picked),
                self._reactor.seconds(),
            )
            if self.speculate
            else []
        )
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
            # Running in memory; assigned in the store until its worker starts it.
            move_to_assigned(
                job_id,
                t,
                change,
                attempts=t.attempts,
                worker=worker_name,
                started=None,
                ended=None,
            )
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
        try:
            await self.record(change)
        except Exception:
            # Not durable, so not given: the tasks are ready again for the next request.
            for attempt in started:
                self.forget_attempt(attempt)
                owner = self.jobs.get(attempt.job_id)
                if owner is not None:
                    t = owner.tasks[attempt.task_id]
                    t.attempts -= 1
                    if not self._attempts_of(owner, t) and not attempt.speculative:
                        # Nothing of it was written: the store's row is as it was.
                        move_in_memory(owner.id, [t], TaskStatus.READY)
                        self.queue_ready(owner, t)
            raise
        for a in started:
            if a.id in self.attempts:
                self.replicated.given(a)
        given = [
            assignment_for(
                self.jobs[a.job_id], a, worker.platform, site, self._catalog, self.checkpoints
            )
            for a in started
            if a.id in self.attempts
        ]
        for assignment in given:
            # The worker fetches them into its cache: tasks reading them are best run there.
            self.scheduler.objects_cached(
                worker.id, [assignment.binary.digest, *(i.digest for i in assignment.inputs)]
            )
        return given

    def _attempts_of(self, job: JobState, t: TaskState) -> Set[str]:
        """Ids of the running attempts of ``t``."""
        return self.attempts.of_task(job.id, t.spec.id)

    def forget_attempt(self, attempt: Attempt, seconds: float | None = None) -> None:
        if attempt.id in self.attempts:
            self._attempt_ended(attempt, seconds)

    def _attempt_started(
        self, job: JobState, attempt: Attempt, tell_scheduler: bool = True
    ) -> None:
        """Hold ``attempt`` as running: in the ledger and, unless told not to, the scheduler."""
        self.attempts.started(attempt)
        if tell_scheduler:
            self.scheduler.attempt_started((job.id, attempt.task_id), job.owner, attempt.worker_id)

    def _attempt_ended(self, attempt: Attempt, seconds: float | None = None) -> None:
        """Out of the ledger; tell the scheduler (fair share counts running attempts;
        durations teach it costs)."""
        self.attempts.ended(attempt)
        job = self.jobs.get(attempt.job_id)
        owner = job.owner if job is not None else -1
        cost = job.tasks[attempt.task_id].spec.cost if job is not None else 1.0
        self.scheduler.attempt_ended(
            (attempt.job_id, attempt.task_id), owner, attempt.worker_id, seconds, cost
        )

    def attempt_of(self, attempt_id: str, worker_id: str) -> Attempt | None:
        """The running attempt, if it is still current; raises if another worker holds it."""
        return self.attempts.attempt_of(attempt_id, worker_id)

    def late_attempt(
        self, attempt_id: str, worker_id: str, same_owner: SameOwner
    ) -> Attempt | None:
        """An attempt presumed lost, now heard of again from its worker (under a new id)."""
        lost = self.attempts.lost(attempt_id)
        if lost is None:
            return None
        if lost.worker_id != worker_id and not same_owner(lost.worker_id):
            raise NotYourAttempt(f"attempt {attempt_id} was not given to this worker")
        job = self.jobs.get(lost.job_id)
        if (
            job is None
            or job.tasks[lost.task_id].state in ENDED_TASK_STATES
            or self.replicated.continued_since(job, job.tasks[lost.task_id], lost)
        ):
            self.attempts.forget_lost(attempt_id)
            return None
        return lost

    # Results (results.py)

    async def record_result(
        self, worker_id: str, result: AttemptResult, same_owner: SameOwner = _nobody
    ) -> bool:
        """Take a Work Result. False when it no longer counts (the result is discarded)."""
        succeeded = result.outcome == OUTCOME_SUCCEEDED
        stored = [o.digest for o in result.outputs if o.content is None]
        if succeeded:
            # Outputs perhaps reported to another member; looked up first, so that nothing
            # waits between the checks below and taking the result.
            await self._catalog.learn(stored)
        attempt = self.attempt_of(result.attempt, worker_id)
        late = False
        if attempt is None:
            attempt = self.late_attempt(result.attempt, worker_id, same_owner)
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
            missing = self._catalog.missing(stored)
            if missing:
                raise MissingObjects(missing)
            if t.spec.replication is not None:
                self.replicated.check(job, t, worker_id)
        await self.results.take(attempt, worker_id, result, late)
        return True

    # Hooks of replicated tasks (replicated.py), beside those of results.py

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
        self.queue_ready(job, t)

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
        for attempt in self.attempts.on_workers(lost):
            job = self.jobs[attempt.job_id]
            t = job.tasks[attempt.task_id]
            self.forget_attempt(attempt)
            self.attempts.presume_lost(attempt)
            move_attempt(attempt, AttemptStatus.LOST, change, ended=now, error="worker lost")
            if job.state == JOB_RUNNING and t.state == TaskStatus.RUNNING:
                self.results.task_failed(job, t, now, "worker lost", change)
        for worker_id in lost:
            self.attempts.worker_gone(worker_id)
            self.health.forget(worker_id)
            self.scheduler.worker_gone(worker_id)
        if change:
            await self.record(change)

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
            self.forget_attempt(attempt)
            move_attempt(attempt, AttemptStatus.GIVEN_BACK, change, ended=now, error="given back")
            if t.state == TaskStatus.RUNNING and not self._attempts_of(job, t):
                move_tasks(job.id, [t], TaskStatus.READY, change)
                self.queue_ready(job, t)
            else:
                # A replicated task wants a replica in place of this one (its other replicas
                # run on).
                self.replicated.offer(job, t)
        if change:
            await self.record(change)

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
        cancel = self.attempts.to_kill(worker_id)
        change = Change()
        reported = list(reported)
        self._reclaim_unclaimed(worker_id, set(reported), grace, change)
        not_begun = set(waiting)
        now = self._reactor.seconds()
        for attempt_id in reported:
            attempt = self.attempts.get(attempt_id)
            if attempt is not None and attempt.worker_id == worker_id:
                if not attempt.begun and attempt_id not in not_begun:
                    attempt_begun(attempt, change, now)
                continue
            late = (
                None
                if attempt is not None
                else self.late_attempt(attempt_id, worker_id, same_owner)
            )
            if late is None:
                cancel.add(attempt_id)
                continue
            self._readopt(late, worker_id, change)
        if change:
            await self.record(change)
        return sorted(cancel)

    def _reclaim_unclaimed(
        self, worker_id: str, listed: set[str], grace: float, change: Change
    ) -> None:
        now = self._reactor.seconds()
        for attempt_id in sorted(set(self.attempts.running_on(worker_id)) - listed):
            attempt = self.attempts[attempt_id]
            if now - attempt.started <= grace:
                continue  # its assignment may still be on its way
            job = self.jobs[attempt.job_id]
            t = job.tasks[attempt.task_id]
            self.forget_attempt(attempt)
            self.attempts.presume_lost(attempt)
            move_attempt(
                attempt, AttemptStatus.LOST, change, ended=now, error="its worker never received it"
            )
            self.log.warn(
                "attempt {attempt} of task {task} never reached worker {worker}; "
                "running the task again",
                attempt=attempt.id,
                task=t.spec.id,
                worker=worker_id,
            )
            if t.state == TaskStatus.RUNNING and not self._attempts_of(job, t):
                move_tasks(job.id, [t], TaskStatus.READY, change)
                self.queue_ready(job, t)
            else:
                self.replicated.offer(job, t)

    def _readopt(self, attempt: Attempt, worker_id: str, change: Change) -> None:
        job = self.jobs[attempt.job_id]
        t = job.tasks[attempt.task_id]
        self.attempts.readopt(attempt.id, worker_id)
        self.scheduler.attempt_started((job.id, attempt.task_id), job.owner, worker_id)
        self.replicated.readopted(job, t, attempt)
        if t.state == TaskStatus.READY:
            t.stop_relaunch()
            self.scheduler.remove((job.id, t.spec.id))
            move_tasks(job.id, [t], TaskStatus.RUNNING, change)
        move_attempt(attempt, AttemptStatus.RUNNING, change, ended=None, worker_id=worker_id)
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
        """The tasks of a running job that no live worker can run, with why: ready ones, and
        replicated ones wanting replicas that no live worker may take.

        ``live_trust``: each live worker's platform and trusted keys (signed programs).
        """
        job = self.jobs.get(job_id)
        if job is None:
            return {}
        ready = {
            t.spec.id: t.spec.binary for t in job.tasks.values() if t.state == TaskStatus.READY
        }
        reasons = untrusted_tasks(ready, job.spec.binaries, live_trust)
        reasons.update(unrunnable_tasks(ready, job.platforms, live_platforms))
        for task_id, why in self.replicated.short_of_workers(job).items():
            reasons.setdefault(task_id, why)  # no worker at all, say, says more
        return reasons

    def running_on(self, worker_id: str) -> list[str]:
        return self.attempts.running_on(worker_id)

    def counts(self) -> Mapping[str, int]:
        """Tasks in memory by state, for the operator's view."""
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            for t in job.tasks.values():
                counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    # Repairs, run by the scanner (repairs.py)

    async def repair_orphans(self) -> int:
        return await self.repairs.orphans()

    async def repair_duplicates(self) -> int:
        return await self.repairs.duplicates()

    async def repair_abandoned(self, known_workers: Iterable[str]) -> int:
        return await self.repairs.abandoned(known_workers)
