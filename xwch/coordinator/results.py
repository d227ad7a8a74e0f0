"""What a task's end does: a Work Result taken, a task done or failed, its job ended with it,
and a task run again when the outputs its readers need are gone (lineage).

Failure handling: a failed or lost attempt is relaunched after a back-off while retries last; a
task failing on ``TasksManager.POISON_WORKERS`` distinct workers fails for good; the first
successful attempt of a task wins and the others are cancelled; a late success of an attempt
presumed lost still counts if its task is unfinished; a ready task whose input has no copy left
at any warehouse sends the task that produced it back to run (lineage), and a lost upload of the
client fails the job with a message saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from xwch.coordinator.attempts import Attempt
from xwch.coordinator.job_state import JobState, TaskState
from xwch.coordinator.scheduler import TaskKey
from xwch.coordinator.transitions import move_attempt, move_tasks, record_task_columns
from xwch.protocol.states import AttemptStatus, TaskStatus
from xwch.protocol.wire import JOB_DONE, JOB_FAILED, OUTCOME_SUCCEEDED
from xwch.protocol.worker import AttemptResult
from xwch.store.records import Change, OutputRow

if TYPE_CHECKING:
    from xwch.coordinator.tasks import TasksManager


class TaskResults:
    """The results and failures of the tasks of one :class:`~xwch.coordinator.tasks.TasksManager`."""

    log = Logger()

    def __init__(self, manager: TasksManager) -> None:
        self._manager = manager

    def inputs_present(self, key: TaskKey, change: Change) -> bool:
        """True when every input of a ready task is stored somewhere; else start lineage."""
        job = self._manager.jobs[key[0]]
        t = job.tasks[key[1]]
        binary = job.spec.binaries[t.spec.binary]
        lost_uploads = []
        # A binary built for one platform only is lost for everyone once its copies are gone.
        if len(binary.variants) == 1:
            [only] = binary.variants.values()
            if only.digest and not self._manager.catalog.has(only.digest):
                lost_uploads.append(f"binary {t.spec.binary!r}")
        lost_producers: list[TaskState] = []
        for ref in t.spec.inputs:
            found = job.input_digest(ref)
            if found is not None and self._manager.catalog.has(found[0]):
                continue
            if ref.file is not None:
                lost_uploads.append(f"file {ref.file!r}")
            else:
                assert ref.task is not None
                lost_producers.append(job.tasks[ref.task])
        if not lost_uploads and not lost_producers:
            return True
        if self._manager.catalog.alive_count() == 0:
            # Every warehouse silent is an outage, or a coordinator too busy to hear their
            # heartbeats, more likely than every copy lost: wait for them, decide nothing.
            return False
        now = self._manager.reactor.seconds()
        if lost_uploads:
            self._manager.end_job(
                job,
                JOB_FAILED,
                f"input {lost_uploads[0]} uploaded by the client is lost: no warehouse holding "
                "it answers any more; submit the job again",
                change,
            )
            return False
        for producer in lost_producers:
            self.run_again(job, producer, now, change)
        return False

    def run_again(
        self,
        job: JobState,
        producer: TaskState,
        now: float,
        change: Change,
        why: str = "its outputs are lost",
    ) -> None:
        """Every copy of ``producer``'s outputs is gone (or they are suspect): it runs again,
        and its readers wait."""
        if producer.state != TaskStatus.DONE:
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
        move_tasks(job.id, [producer], TaskStatus.READY, change, ended=None)
        self._manager.queue_ready(job, producer)
        blocked = []
        for dependent_id in producer.dependents:
            dependent = job.tasks[dependent_id]
            if dependent.state in (TaskStatus.READY, TaskStatus.BLOCKED):
                dependent.waiting += 1
                if dependent.state == TaskStatus.READY:
                    self._manager.scheduler.remove((job.id, dependent_id))
                    blocked.append(dependent)
        move_tasks(job.id, blocked, TaskStatus.BLOCKED, change)

    async def take(
        self, attempt: Attempt, worker_id: str, result: AttemptResult, late: bool
    ) -> None:
        """Record the result of ``attempt`` (checked by the tasks' manager), sent by
        ``worker_id``; ``late``: the attempt was presumed lost."""
        succeeded = result.outcome == OUTCOME_SUCCEEDED
        job = self._manager.jobs[attempt.job_id]
        t = job.tasks[attempt.task_id]
        now = self._manager.reactor.seconds()
        change = Change()
        if late:
            self._manager.attempts.forget_lost(attempt.id)
            self.log.info(
                "late result of attempt {attempt} (task {task}) accepted",
                attempt=attempt.id,
                task=t.spec.id,
            )
        self._manager.forget_attempt(attempt, result.duration if succeeded else None)
        lineage_over = 0
        # It ran between two Work Alives: it started then, by its own account (written with
        # the task's end when it succeeded: one row update fewer a task).
        started = None if attempt.begun else now - result.duration
        if started is not None and not succeeded:
            record_task_columns(job.id, t, change, started=started)
        move_attempt(
            attempt,
            AttemptStatus.SUCCEEDED if succeeded else AttemptStatus.FAILED,
            change,
            ended=now,
            exit_code=result.exit_code,
            error=result.error,
            stdout=result.stdout,
            stderr=result.stderr,
            worker_id=worker_id if worker_id != attempt.worker_id else None,
        )
        if self._manager.replicated.is_comparison(job, t) and result.exit_code is not None:
            # A compare program's exit status is its answer, not a failure.
            self._manager.replicated.compared(job, t, succeeded, now, change)
        elif succeeded and t.spec.replication is not None:
            self._manager.health.succeeded(worker_id)
            self._manager.replicated.take_result(
                job, t, attempt, worker_id, result, now, change, started
            )
            lineage_over = attempt.lineage
        elif succeeded:
            job.stragglers.finished(result.duration, t.spec.cost)
            self._manager.health.succeeded(worker_id)
            change.tasks_done_by_worker[worker_id] = 1
            t.outputs = {o.name: (o.digest, o.size) for o in result.outputs}
            # Small outputs came in the result: kept here, written with the result.
            inline = {o.digest: o.content for o in result.outputs if o.content is not None}
            if inline:
                self._manager.catalog.hold_inline(inline)
                change.inline_objects.update(inline)
            # The worker keeps its outputs in its cache: their readers are best run there.
            self._manager.scheduler.objects_cached(worker_id, [o.digest for o in result.outputs])
            change.outputs.extend(
                OutputRow(job.id, t.spec.id, o.name, o.digest, o.size) for o in result.outputs
            )
            self.task_done(job, t, now, change, started)
        else:
            self._manager.health.failed(worker_id)
            t.failed_on.add(worker_id)
            reason = result.error or f"exit status {result.exit_code}"
            self.task_failed(job, t, now, reason, change)
        await self._manager.record(change)
        checkpoints = self._manager.checkpoints
        if lineage_over and checkpoints is not None:
            # No attempt continues this replica's lineage any more; dropped once its result is
            # recorded, lest a coordinator dying in between lose both.
            checkpoints.lineage_over(job.id, t.spec.id, lineage_over)

    def task_done(
        self, job: JobState, t: TaskState, now: float, change: Change, started: float | None = None
    ) -> None:
        t.stop_relaunch()
        self._manager.scheduler.remove((job.id, t.spec.id))
        # The first result wins: any other attempt of the task is now useless.
        self._manager.cancel_running(job, t, now, "another attempt finished first", change)
        # Its start time, when it is new, goes with its end: one row update fewer a task.
        begun = {} if started is None else {"started": started}
        move_tasks(job.id, [t], TaskStatus.DONE, change, ended=now, **begun)
        job.remaining -= 1
        if self._manager.checkpoints is not None:
            self._manager.checkpoints.tasks_over(job.id, [t.spec.id])
        newly_ready = []
        for dependent_id in t.dependents:
            dependent = job.tasks[dependent_id]
            dependent.waiting -= 1
            if dependent.waiting == 0 and dependent.state == TaskStatus.BLOCKED:
                newly_ready.append(dependent)
            elif self._manager.prefetcher is not None and dependent.state == TaskStatus.BLOCKED:
                # Still waiting for others: its inputs may start towards it now.
                self._manager.prefetcher.waiting(
                    (job.id, dependent_id), job.known_inputs(dependent)
                )
        move_tasks(job.id, newly_ready, TaskStatus.READY, change)
        for dependent in newly_ready:
            self._manager.queue_ready(job, dependent)
        if job.remaining == 0:
            self._manager.end_job(job, JOB_DONE, None, change)

    def task_failed(
        self, job: JobState, t: TaskState, now: float, reason: str, change: Change
    ) -> None:
        """An attempt failed or was lost: relaunch while retries last, else fail the job."""
        t.failures += 1
        if self._manager.attempts.of_task(job.id, t.spec.id):
            # Another attempt of the task is still running: it may yet succeed.
            record_task_columns(job.id, t, change, failures=t.failures)
            # A replicated task wants a replica in place of this one.
            self._manager.replicated.offer(job, t)
            return
        poisoned = len(t.failed_on) >= self._manager.POISON_WORKERS
        if t.failures <= t.spec.retries and not poisoned:
            move_tasks(job.id, [t], TaskStatus.READY, change, failures=t.failures)
            self._manager.queue_ready_later(job, t)
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
        t.stop_relaunch()
        self._manager.scheduler.remove((job.id, t.spec.id))
        self._manager.cancel_running(job, t, now, "its task failed", change)
        move_tasks(job.id, [t], TaskStatus.FAILED, change, failures=t.failures, ended=now)
        self._manager.end_job(job, JOB_FAILED, f"task {t.spec.id} {why}", change)
