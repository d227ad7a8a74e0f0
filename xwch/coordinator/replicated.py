"""What the tasks' manager does differently for a task whose results are checked by
replication (``quorum`` in the job file).

The tasks' manager calls these hooks at a few points: when it picks a task for a worker
(:meth:`ReplicatedTasks.lineage_for`, None when the worker may not take it), once an attempt
starts (:meth:`~ReplicatedTasks.started`), when an attempt of the task fails or goes
(:meth:`~ReplicatedTasks.offer`) and when a replica returns its result
(:meth:`~ReplicatedTasks.take_result`). A replicated task stays in the scheduler's ready set
while it wants more replicas, so replicas start on several workers at once, each picked by the
scheduler's usual policy (locality, speed, fair share).

A replicated task that keeps checkpoints gives each replica a lineage of its own
(:mod:`xwch.coordinator.lineages`): :meth:`~ReplicatedTasks.lineage_for` says which one a worker
would continue, and refuses a worker that contributed to another replica of the task.

The canonical result is the outputs of the first result of the winning group: they are the
task's outputs, what later tasks read and what ``results`` downloads. The other results are
kept in the attempts' records only (their ``error`` says how they fared in the vote).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from typing import TYPE_CHECKING

from twisted.logger import Logger

from xwch import dag
from xwch.coordinator.job_state import TaskState
from xwch.coordinator.lineages import ONLY_LINEAGE, Lineages
from xwch.coordinator.reliability import Record
from xwch.coordinator.replication import (
    Replicas,
    Returned,
    SecondReplica,
    TaskVote,
    returned_result,
)
from xwch.coordinator.vote import AGREED, FAILED
from xwch.protocol.states import AttemptStatus, TaskStatus
from xwch.protocol.worker import AttemptResult
from xwch.store import reliability as reliability_queries
from xwch.store.records import AttemptUpdate, Change, OutputRow

if TYPE_CHECKING:
    from xwch.coordinator.attempts import Attempt
    from xwch.coordinator.job_state import JobState
    from xwch.coordinator.tasks import TasksManager


class ReplicatedTasks:
    """The replication hooks of one :class:`~xwch.coordinator.tasks.TasksManager`."""

    log = Logger()

    def __init__(self, manager: TasksManager, replicas: Replicas) -> None:
        self._manager = manager
        self.replicas = replicas
        # (job, comparing task) -> the task whose results it compares.
        self._comparisons: dict[tuple[str, str], str] = {}
        self._numbers = itertools.count(1)
        # The checkpoint lineages of replicas (tasks that keep checkpoints only).
        self.lineages = Lineages()
        # Workers' records changed by votes, written at the end of the turn.
        self._records_due: dict[str, Record] = {}

    def forget_job(self, job_id: str) -> None:
        self.replicas.forget_job(job_id)
        self.lineages.forget_job(job_id)
        for key in [k for k in self._comparisons if k[0] == job_id]:
            del self._comparisons[key]

    def is_comparison(self, job: JobState, t: TaskState) -> bool:
        return (job.id, t.spec.id) in self._comparisons

    def _running(self, job: JobState, t: TaskState) -> int:
        return len(self._manager.attempts.of_task(job.id, t.spec.id))

    def lineage_for(self, job: JobState, t: TaskState, worker_id: str) -> int | None:
        """The checkpoint lineage an attempt of ``t`` on ``worker_id`` would continue, or None
        when that worker may take no replica of ``t``."""
        if t.spec.replication is None:
            return ONLY_LINEAGE
        key = (job.id, t.spec.id)
        holders = self._manager.attempts.workers_of(job.id, t.spec.id)
        if t.spec.checkpoint is None:
            # Nothing carries over from one attempt to the next: replicas need no lineage.
            return ONLY_LINEAGE if self.replicas.accepts(key, worker_id, holders) else None
        attempts = self._manager.attempts
        running = {attempts[a].lineage for a in attempts.of_task(job.id, t.spec.id)}
        for lineage in self.lineages.candidates(key, worker_id, running):
            # Those who bear on the other replicas' ballots are kept apart from this one.
            if self.replicas.accepts(key, worker_id, holders | self.lineages.others(key, lineage)):
                return lineage
        return None

    def short_of_workers(self, job: JobState) -> dict[str, str]:
        """Task id -> why, for the replicated tasks of ``job`` that want more replicas than
        any live worker may take (each worker takes part in one replica of a task at most)."""
        reasons = {}
        live = [w for w in self.replicas.live_workers() if not self.replicas.distrusted(w)]
        for t in job.tasks.values():
            if t.spec.replication is None or t.state not in (TaskStatus.READY, TaskStatus.RUNNING):
                continue
            wanted = self.replicas.wanted((job.id, t.spec.id), self._running(job, t))
            if wanted <= 0 or any(self.lineage_for(job, t, w) is not None for w in live):
                continue
            reasons[t.spec.id] = (
                f"wants {wanted} more replica(s), each on a worker that has not taken part in "
                f"this task; none of the {len(live)} live trusted worker(s) qualifies"
            )
        return reasons

    def started(self, job: JobState, t: TaskState, worker_id: str) -> None:
        """An attempt of ``t`` started on ``worker_id``: plan the vote, offer more replicas."""
        if t.spec.replication is None:
            return
        self.replicas.plan((job.id, t.spec.id), t.spec.replication, worker_id)
        self.offer(job, t)

    def given(self, attempt: Attempt) -> None:
        """``attempt`` is written to the store: its worker contributes to its lineage. (Until
        then, running, it keeps its worker apart from the other replicas all the same.)"""
        if attempt.lineage != ONLY_LINEAGE:
            key = (attempt.job_id, attempt.task_id)
            self.lineages.join(key, attempt.lineage, attempt.worker_id, attempt.id)

    def continued_since(self, job: JobState, t: TaskState, attempt: Attempt) -> bool:
        """Whether the replica of ``attempt``, presumed lost, was handed on since (or its
        result is in): the attempt is not to be taken back."""
        if attempt.lineage == ONLY_LINEAGE:
            return False
        return self.lineages.continued_since((job.id, t.spec.id), attempt.lineage, attempt.id)

    def readopted(self, job: JobState, t: TaskState, attempt: Attempt) -> None:
        """An attempt presumed lost runs again, on ``attempt.worker_id`` (its worker registered
        again under another id): that id has contributed to its lineage too."""
        if attempt.lineage != ONLY_LINEAGE:
            self.lineages.join((job.id, t.spec.id), attempt.lineage, attempt.worker_id, attempt.id)

    def offer(self, job: JobState, t: TaskState) -> None:
        """Keep ``t`` ready for other workers while it wants more replicas than run."""
        if t.spec.replication is None or t.state != TaskStatus.RUNNING:
            return
        key = (job.id, t.spec.id)
        if self.replicas.wanted(key, self._running(job, t)) > 0:
            self._manager.offer_replica(job, t)

    def check(self, job: JobState, t: TaskState, worker_id: str) -> None:
        """Refuse, before anything changes, a second result of one worker for ``t``."""
        try:
            self.replicas.check_voter((job.id, t.spec.id), worker_id)
        except SecondReplica:
            self.log.warn(
                "worker {worker} sent a second result for task {task} of job {job}: refused",
                worker=worker_id,
                task=t.spec.id,
                job=job.id,
            )
            raise

    def take_result(
        self,
        job: JobState,
        t: TaskState,
        attempt: Attempt,
        worker_id: str,
        result: AttemptResult,
        now: float,
        change: Change,
        started: float | None,
    ) -> None:
        """A replica succeeded: count its ballot, and act on what the vote decides."""
        replication = t.spec.replication
        assert replication is not None
        key = (job.id, t.spec.id)
        if self.replicas.vote_of(key) is None:
            # Its vote was forgotten (a restarted coordinator): it starts again from here.
            self.replicas.plan(key, replication, worker_id)
        returned = returned_result(
            attempt.id,
            worker_id,
            [(o.name, o.digest, o.size) for o in result.outputs],
            {o.digest: o.content for o in result.outputs if o.content is not None},
            result.exit_code,
            result.stdout,
            result.stderr,
            now,
        )
        if self.lineages.crossed(key, attempt.lineage):
            returned = replace(returned, shared=True)
        if replication.compare is not None and returned.inline:
            # A compare program may read it: kept here (in memory) until the vote ends.
            self._manager.catalog.hold_inline(returned.inline)
        # Its attempt is recorded as it came (succeeded); the vote rewrites the record only of
        # a result it turns down: one row write fewer per replica that agrees.
        self.replicas.cast(key, returned, running=self._running(job, t))
        # Its lineage is over whatever the vote makes of it: no attempt continues it.
        self.lineages.finish(key, attempt.lineage)
        self._decide(job, t, now, change, started)

    def _decide(
        self, job: JobState, t: TaskState, now: float, change: Change, started: float | None
    ) -> None:
        """Act on what the vote of ``t`` decides now."""
        key = (job.id, t.spec.id)
        vote = self.replicas.vote_of(key)
        assert vote is not None and t.spec.replication is not None
        verdict = self.replicas.verdict(key, running=self._running(job, t))
        if verdict.state == AGREED:
            self._stop_comparisons(job, vote, now, change)
            winners = [r for r in vote.returned if vote.class_of(r.key) == verdict.key]
            losers = [r for r in vote.returned if vote.class_of(r.key) != verdict.key]
            self._accept(job, t, winners[0], now, change)
            if vote.single:
                identity = self.replicas.identity(winners[0].worker)
                self.replicas.unconfirmed.setdefault(identity, {})[key] = winners[0]
            for loser in losers:
                _judge(
                    change,
                    loser,
                    f"outvoted: its outputs differ from those {len(winners)} "
                    "other workers agreed on",
                )
            if vote.checking is not None:
                self._checked(job, t, vote.checking, winners[0], change)
            self.replicas.forget(key)
            self.lineages.forget_task(key)
            self._count(winners, losers, single=vote.single, now=now, change=change)
            self.log.debug(
                "task {task} of job {job}: {n} results agree{single}",
                task=t.spec.id,
                job=job.id,
                n=len(winners),
                single=" (one trusted worker, unconfirmed)" if vote.single else "",
            )
            self._manager.results.task_done(job, t, now, change, started)
            return
        compare = t.spec.replication.compare
        if compare is not None:
            for one, other in vote.pairs_to_compare():
                pair = frozenset((vote.class_of(one.key), vote.class_of(other.key)))
                task_id = self._start_comparison(job, t, compare, one, other)
                vote.comparing[task_id] = pair
                self._comparisons[job.id, task_id] = t.spec.id
        if verdict.state == FAILED and not vote.comparing:
            assert verdict.message is not None
            for r in vote.returned:
                _judge(change, r, verdict.message)
            self.replicas.forget(key)
            self.lineages.forget_task(key)
            self._manager.results.fail_for_good(job, t, now, verdict.message, change)
            return
        self.log.debug(
            "task {task} of job {job}: {n} result(s) in, waiting for {quorum} to agree",
            task=t.spec.id,
            job=job.id,
            n=len(vote.returned),
            quorum=vote.quorum,
        )
        if t.state != TaskStatus.READY:
            self.offer(job, t)

    # Compare programs

    def _stop_comparisons(self, job: JobState, vote: TaskVote, now: float, change: Change) -> None:
        """The vote is over: comparisons still under way are of no use."""
        for task_id in list(vote.comparing):
            comparison = job.tasks.get(task_id)
            if comparison is not None:
                self._end_comparison(job, comparison, now, change)
            self._comparisons.pop((job.id, task_id), None)
        vote.comparing.clear()

    def _start_comparison(
        self, job: JobState, t: TaskState, compare: str, one: Returned, other: Returned
    ) -> str:
        """Start a task running the program ``compare`` on two results of ``t``, found in its
        folders ``a/`` and ``b/`` (its arguments); returns its id. It lives in memory only,
        beside the job's tasks, with two stand-in tasks holding the results it reads."""
        # Attempts' task ids are at most 128 characters in the store.
        base = (
            t.spec.id
            if len(t.spec.id) <= 100
            else hashlib.sha256(t.spec.id.encode()).hexdigest()[:16]
        )
        task_id = f"{base}~compare-{next(self._numbers)}"
        inputs: list[dag.InputRef] = []
        for side, r in (("a", one), ("b", other)):
            holder = TaskState(
                spec=dag.Task(id=f"{task_id}~{side}", binary=compare),
                position=t.position,
                state=TaskStatus.CANCELLED,
                outputs={name: (digest, size) for name, digest, size in r.outputs},
            )
            job.tasks[holder.spec.id] = holder
            inputs += [
                dag.InputRef(f"{side}/{name}", task=holder.spec.id, output=name)
                for name, _, _ in r.outputs
            ]
        spec = dag.Task(
            id=task_id,
            binary=compare,
            args=("a", "b"),
            inputs=tuple(inputs),
            env=t.spec.env,
            timeout=t.spec.timeout,
            retries=t.spec.retries,
        )
        comparison = TaskState(spec=spec, position=t.position, state=TaskStatus.READY)
        job.tasks[task_id] = comparison
        self._manager.queue_ready(job, comparison)
        return task_id

    def _end_comparison(
        self, job: JobState, comparison: TaskState, now: float, change: Change
    ) -> None:
        """A comparison answered: it and its two stand-ins are forgotten."""
        if comparison.relaunch is not None and comparison.relaunch.active():
            comparison.relaunch.cancel()
        self._manager.scheduler.remove((job.id, comparison.spec.id))
        self._manager.cancel_running(job, comparison, now, "another attempt answered first", change)
        for task_id in (comparison.spec.id, f"{comparison.spec.id}~a", f"{comparison.spec.id}~b"):
            job.tasks.pop(task_id, None)

    def compared(
        self, job: JobState, comparison: TaskState, agree: bool, now: float, change: Change
    ) -> None:
        """A compare program ended: ``agree`` when it exited 0."""
        self._end_comparison(job, comparison, now, change)
        voted_id = self._comparisons.pop((job.id, comparison.spec.id))
        t = job.tasks.get(voted_id)
        vote = self.replicas.vote_of((job.id, voted_id))
        if t is None or vote is None or comparison.spec.id not in vote.comparing:
            return  # the vote ended meanwhile
        pair = vote.comparing.pop(comparison.spec.id)
        vote.compared.add(pair)
        one, other = sorted(pair)
        self.log.info(
            "task {task} of job {job}: results {one} and {other} {agree}",
            task=voted_id,
            job=job.id,
            one=one[:12],
            other=other[:12],
            agree="agree" if agree else "differ",
        )
        if agree:
            vote.merge(one, other)
        if t.state in (TaskStatus.RUNNING, TaskStatus.READY):
            self._decide(job, t, now, change, None)

    def _accept(
        self, job: JobState, t: TaskState, canonical: Returned, now: float, change: Change
    ) -> None:
        t.outputs = {name: (digest, size) for name, digest, size in canonical.outputs}
        inline = {
            d: c for d, c in canonical.inline.items() if d in {o[1] for o in canonical.outputs}
        }
        if inline:
            self._manager.catalog.hold_inline(inline)
            change.inline_objects.update(inline)
        change.outputs.extend(
            OutputRow(job.id, t.spec.id, name, digest, size)
            for name, digest, size in canonical.outputs
        )
        change.tasks_done_by_worker[canonical.worker] = 1
        self._manager.scheduler.objects_cached(canonical.worker, [o[1] for o in canonical.outputs])

    def _count(
        self,
        winners: list[Returned],
        losers: list[Returned],
        single: bool,
        now: float,
        change: Change,
    ) -> None:
        """Teach reliability who agreed and who did not (a single result proves nothing), and
        check again what a worker that lost a vote had returned unconfirmed. A result that
        continued another worker's checkpoints is left out: whichever of them erred, or lied,
        cannot be told, and blaming the one that returned it would let a cheater leave bad
        checkpoints behind to have honest workers distrusted."""
        if single:
            return
        winners = [r for r in winners if not r.shared]
        losers = [r for r in losers if not r.shared]
        identity = self.replicas.identity
        records, newly = self.replicas.reliability.voted(
            [identity(r.worker) for r in winners], [identity(r.worker) for r in losers]
        )
        self._write_records(records)
        for who in newly:
            self.log.warn(
                "worker {identity} lost {n} votes: it is distrusted and gets no more work",
                identity=who,
                n=self.replicas.reliability.DISTRUST_AFTER,
            )
        for loser in losers:
            self._check_again(identity(loser.worker), now, change)

    def _write_records(self, records: list[Record]) -> None:
        """Workers' records, written once per turn of the reactor (each vote changes two or
        three of them; many votes end in one turn under load). They are counts, not decisions:
        a coordinator dying within that turn forgets one turn's votes."""
        first = not self._records_due
        self._records_due.update((r.identity, r) for r in records)
        if first:
            self._manager.reactor.callLater(0, self._flush_records)

    def _flush_records(self) -> None:
        due, self._records_due = list(self._records_due.values()), {}
        if due:
            self._manager.write_unawaited(reliability_queries.save_records_thd, due)

    def _check_again(self, identity: str, now: float, change: Change) -> None:
        """Run again, on other workers, the tasks ``identity`` alone vouched for."""
        for key, suspect in sorted(self.replicas.unconfirmed.pop(identity, {}).items()):
            job = self._manager.jobs.get(key[0])
            if job is None:
                continue
            t = job.tasks[key[1]]
            replication = t.spec.replication
            if replication is None or t.state != TaskStatus.DONE:
                continue
            _judge(
                change,
                suspect,
                "accepted from one worker that has since lost a vote: checked again",
                AttemptStatus.SUCCEEDED,
            )
            self._manager.results.run_again(
                job, t, now, change, why=f"its result came from {identity} alone, who lost a vote"
            )
            self.replicas.plan_check(key, replication, suspect)

    def _checked(
        self, job: JobState, t: TaskState, suspect: Returned, canonical: Returned, change: Change
    ) -> None:
        """A result accepted unconfirmed was checked: say so if it was wrong."""
        if suspect.key == canonical.key:
            self.log.info(
                "task {task} of job {job}: the unconfirmed result was right",
                task=t.spec.id,
                job=job.id,
            )
            return
        readers = sorted(
            d for d in t.dependents if job.tasks[d].state in (TaskStatus.RUNNING, TaskStatus.DONE)
        )
        note = (
            f"task {t.spec.id}: a result accepted from one worker was found wrong and replaced"
            + (f"; tasks that had read it: {', '.join(readers)}" if readers else "")
        )
        self.log.warn("job {job}: {note}", job=job.id, note=note)
        self._manager.tell_job(job, note, change)


def _judge(
    change: Change, r: Returned, error: str | None, state: AttemptStatus = AttemptStatus.FAILED
) -> None:
    """Record how the vote judged a replica's attempt, in place of what ``change`` already
    says of it (an attempt is updated once per change: its row is written once)."""
    update = _rewritten(r, error, state)
    for i, earlier in enumerate(change.attempt_updates):
        if earlier.id == r.attempt:
            change.attempt_updates[i] = replace(
                update, worker_id=earlier.worker_id, ended=earlier.ended
            )
            return
    change.attempt_updates.append(update)


def _rewritten(
    r: Returned, error: str | None, state: AttemptStatus = AttemptStatus.FAILED
) -> AttemptUpdate:
    """The record of a replica's attempt once the vote has judged it."""
    return AttemptUpdate(
        id=r.attempt,
        state=state,
        ended=r.ended,
        exit_code=r.exit_code,
        error=error,
        stdout=r.stdout,
        stderr=r.stderr,
    )
