"""The coordinator's side of checkpoints: recorded from the attempt running the task, handed to
its relaunch newest first, and dropped from warehouses once superseded or once the task is done."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, digest_of, wire_job
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.coordinator.attempts import NotYourAttempt
from xwch.coordinator.checkpoints import CheckpointBook
from xwch.coordinator.tasks import MissingObjects, TasksManager
from xwch.protocol.checkpoints import CheckpointRecorded, CheckpointSaved
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import reliability as reliability_queries
from xwch.store.checkpoints import load_checkpoints_thd


class RecordedDrops:
    """Stands in for warehouses asked to delete objects: records each request, and answers at
    once or, while ``held``, when released."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []
        self.held = False
        self._waiting: list[Deferred[None]] = []

    async def request(self, url: str, digest: str, capability: str) -> None:
        assert capability
        self.dropped.append((url, digest))
        if self.held:
            answer: Deferred[None] = Deferred()
            self._waiting.append(answer)
            await answer

    def release(self) -> None:
        self.held = False
        waiting, self._waiting = self._waiting, []
        for answer in waiting:
            answer.callback(None)


def checkpoint(attempt: str, name: str, *chunks: str) -> CheckpointSaved:
    """A checkpoint of ``attempt`` whose manifest is named after ``name``."""
    return CheckpointSaved(
        attempt=attempt,
        manifest=digest_of(f"manifest {name}"),
        size=100,
        content=10 * len(chunks),
        chunks=tuple(digest_of(c) for c in chunks),
    )


class CheckpointTestCase(CoordinatorTestCase):
    def build(self) -> Coordinator:
        self.drops = RecordedDrops()
        config = CoordinatorConfig(db_url=self.url, alive_interval=5.0)
        return self.successResultOf(
            ensureDeferred(
                make_coordinator(
                    config,
                    self.clock,
                    db=self.db,
                    request_copy=self.copies.request,
                    request_drop=self.drops.request,
                )
            )
        )

    @property
    def book(self) -> CheckpointBook:
        book = self.coordinator.tasks.checkpoints
        assert book is not None
        return book

    def work(self, worker_id: str) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, 1)
            )
        )

    def save(self, worker_id: str, saved: CheckpointSaved) -> CheckpointRecorded:
        self.store_objects(saved.manifest, *saved.chunks)
        return self.successResultOf(ensureDeferred(self.book.record(worker_id, saved)))

    def checkpointed(self, job_id: str) -> float | None:
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job_id))
        return rows[0].checkpointed

    def stored(self) -> list[tuple[str, int]]:
        rows = self.successResultOf(self.db.read(load_checkpoints_thd, list(self.jobs)))
        return [(r.task_id, r.seq) for r in rows]

    def running_task(self) -> tuple[str, str, Assignment]:
        job = self.submit(
            wire_job([{"id": "long", "outputs": ["o"], "checkpoint": "ck/", "checkpoint_every": 5}])
        )
        self.jobs = [job]
        worker = self.register("first")
        [a] = self.work(worker)
        return job, worker, a


class CheckpointTests(CheckpointTestCase):
    def test_an_assignment_tells_where_and_how_often_to_save(self) -> None:
        _job, _worker, a = self.running_task()
        assert a.checkpoint is not None
        assert (a.checkpoint.path, a.checkpoint.every, a.checkpoint.restore) == ("ck/", 5.0, ())

    def test_a_checkpoint_of_the_running_attempt_is_recorded_with_its_time(self) -> None:
        """Recorded in the store before the answer; the task shows when."""
        job, worker, a = self.running_task()
        answer = self.save(worker, checkpoint(a.attempt, "1", "c1", "c2"))
        assert answer == CheckpointRecorded(recorded=True, taken=self.clock.seconds())
        assert self.checkpointed(job) == self.clock.seconds()
        assert self.stored() == [("long", 1)]

    def test_a_checkpoint_whose_objects_are_at_no_warehouse_is_refused(self) -> None:
        _job, worker, a = self.running_task()
        saved = checkpoint(a.attempt, "1", "c1")
        self.store_objects(saved.manifest)
        failure = self.failureResultOf(ensureDeferred(self.book.record(worker, saved)))
        assert failure.check(MissingObjects)
        assert self.stored() == []

    def test_another_workers_attempt_cannot_save_a_checkpoint(self) -> None:
        _job, _worker, a = self.running_task()
        other = self.register("other")
        saved = checkpoint(a.attempt, "1", "c1")
        self.store_objects(saved.manifest, *saved.chunks)
        failure = self.failureResultOf(ensureDeferred(self.book.record(other, saved)))
        assert failure.check(NotYourAttempt)

    def test_a_relaunch_gets_the_kept_checkpoints_newest_first_with_their_sources(self) -> None:
        """The two latest are kept; the one before them is dropped from its warehouse, but not
        the chunks the kept ones still name."""
        _job, worker, a = self.running_task()
        self.save(worker, checkpoint(a.attempt, "1", "shared", "old"))
        self.advance(1)
        self.save(worker, checkpoint(a.attempt, "2", "shared", "mid"))
        self.advance(1)
        self.save(worker, checkpoint(a.attempt, "3", "shared", "new"))
        assert self.stored() == [("long", 2), ("long", 3)]
        assert sorted(d for _, d in self.drops.dropped) == sorted(
            [digest_of("manifest 1"), digest_of("old")]
        )
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.give_back(self.worker_token, worker, [a.attempt])
            )
        )
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [b] = self.work(self.register("second"))
        assert b.checkpoint is not None
        restore = [s.manifest for s in b.checkpoint.restore]
        assert restore == [digest_of("manifest 3"), digest_of("manifest 2")]
        for name in ("manifest 3", "manifest 2", "shared", "mid", "new"):
            assert b.sources[digest_of(name)], name

    def test_a_done_task_has_its_checkpoints_dropped(self) -> None:
        _job, worker, a = self.running_task()
        self.save(worker, checkpoint(a.attempt, "1", "c1"))
        output = OutputFile("o", digest_of("output"), 3)
        self.store_objects(output.digest)
        result = AttemptResult(a.attempt, "succeeded", 0, outputs=(output,))
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
        )
        self.successResultOf(self.book.dropping())
        assert self.stored() == []
        assert sorted(d for _, d in self.drops.dropped) == sorted(
            [digest_of("manifest 1"), digest_of("c1")]
        )
        assert not self.coordinator.catalog.has(digest_of("c1"))
        # A late save of the attempt is no longer wanted.
        assert self.save(worker, checkpoint(a.attempt, "2", "c2")).recorded is False

    def test_a_chunk_that_is_also_an_output_is_never_dropped(self) -> None:
        """A small file of a checkpoint may hold the very bytes of another job's output."""
        job, worker, a = self.running_task()
        other = self.submit(wire_job([{"id": "x", "outputs": ["o"]}], name="other"))
        x_worker = self.register("x-worker")
        [x] = self.work(x_worker)
        assert x.job == other
        output = OutputFile("o", digest_of("same bytes"), 3)
        self.store_objects(output.digest)
        result = AttemptResult(x.attempt, "succeeded", 0, outputs=(output,))
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, x_worker, result))
        )
        self.save(worker, checkpoint(a.attempt, "1", "same bytes"))
        self.book.tasks_over(job)
        self.successResultOf(self.book.dropping())
        assert [d for _, d in self.drops.dropped] == [digest_of("manifest 1")]

    def test_a_refused_saves_objects_are_dropped_when_nothing_names_them(self) -> None:
        """A save that arrives once its attempt no longer runs the task is not recorded, and
        its chunks are not left at the warehouse for nothing."""
        job, worker, a = self.running_task()
        self.save(worker, checkpoint(a.attempt, "1", "kept"))
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.give_back(self.worker_token, worker, [a.attempt])
            )
        )
        late = checkpoint(a.attempt, "late", "kept", "orphan")
        assert self.save(worker, late) == CheckpointRecorded(recorded=False)
        self.successResultOf(self.book.dropping())
        assert sorted(d for _, d in self.drops.dropped) == sorted(
            [digest_of("manifest late"), digest_of("orphan")]
        )
        assert [r.manifest for r in self.book.kept(job, "long")] == [digest_of("manifest 1")]

    def test_a_restarted_coordinator_still_knows_the_kept_checkpoints(self) -> None:
        job, worker, a = self.running_task()
        self.save(worker, checkpoint(a.attempt, "1", "c1"))
        self.coordinator = self.build()
        book = self.coordinator.tasks.checkpoints
        assert book is not None
        assert [r.manifest for r in book.kept(job, "long")] == [digest_of("manifest 1")]


class ReplicaLineageTests(CheckpointTestCase):
    """Each replica of a task checked by replication keeps checkpoints of its own."""

    def replicated_task(self, workers: int = 2) -> tuple[str, list[str], list[Assignment]]:
        job = self.submit(
            wire_job([{"id": "long", "outputs": ["o"], "checkpoint": "ck/", "quorum": 2}])
        )
        self.jobs = [job]
        names = [self.register(f"w{i}") for i in range(workers)]
        given = [a for w in names[:2] for a in self.work(w)]
        assert [a.task for a in given] == ["long", "long"]
        return job, names, given

    def give_back(self, worker: str, a: Assignment) -> None:
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.give_back(self.worker_token, worker, [a.attempt])
            )
        )

    def report(self, worker: str, a: Assignment, content: str) -> None:
        output = OutputFile("o", digest_of(content), 3)
        self.store_objects(output.digest)
        result = AttemptResult(a.attempt, "succeeded", 0, outputs=(output,))
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
        )

    @staticmethod
    def restored(a: Assignment) -> list[str]:
        assert a.checkpoint is not None
        return [s.manifest for s in a.checkpoint.restore]

    def test_each_replica_saves_its_own_lineage(self) -> None:
        """Both replicas are told to checkpoint, start from scratch, and their saves are kept
        apart: one replica's save never supersedes the other's."""
        job, [w0, w1], [a, b] = self.replicated_task()
        assert self.restored(a) == [] and self.restored(b) == []
        for n in (1, 2, 3):
            assert self.save(w0, checkpoint(a.attempt, f"a{n}", f"a{n}")).recorded
        assert self.save(w1, checkpoint(b.attempt, "b1", "b1")).recorded
        assert [r.manifest for r in self.book.kept(job, "long", 1)] == [
            digest_of("manifest a2"),
            digest_of("manifest a3"),
        ]
        assert [r.manifest for r in self.book.kept(job, "long", 2)] == [digest_of("manifest b1")]
        assert self.book.kept(job, "long") == []
        assert self.checkpointed(job) == self.clock.seconds()

    def test_a_lost_replica_is_continued_from_its_own_checkpoints_only(self) -> None:
        """The replica replacing one given back restores that replica's checkpoints, never the
        other's, and on a worker that runs no other replica."""
        job, [w0, w1, w2], [a, b] = self.replicated_task(workers=3)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.save(w1, checkpoint(b.attempt, "b1", "b-chunk"))
        self.give_back(w0, a)
        # The worker running the other replica gets nothing: the task stays for a third.
        assert self.work(w1) == []
        [c] = self.work(w2)
        assert c.task == "long"
        assert self.restored(c) == [digest_of("manifest a1")]
        assert digest_of("b-chunk") not in c.sources
        assert c.sources[digest_of("a-chunk")]
        # Its saves continue that lineage.
        self.save(w2, checkpoint(c.attempt, "c1", "c-chunk"))
        assert [r.manifest for r in self.book.kept(job, "long", 1)] == [
            digest_of("manifest a1"),
            digest_of("manifest c1"),
        ]

    def test_a_contributor_of_one_replica_never_takes_another(self) -> None:
        """Once a replica crossed from one worker to another, both bear on its result: neither
        may take any other replica of the task, and the one that left may not come back to it
        while another runs it."""
        _job, [w0, w1, w2, w3], [a, b] = self.replicated_task(workers=4)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.save(w1, checkpoint(b.attempt, "b1", "b-chunk"))
        self.give_back(w0, a)
        [c] = self.work(w2)
        assert self.restored(c) == [digest_of("manifest a1")]
        # The second replica's worker goes: its lineage is free, but not for w0, which
        # contributed to the first.
        self.give_back(w1, b)
        assert self.work(w0) == []
        [d] = self.work(w3)
        assert self.restored(d) == [digest_of("manifest b1")]

    def test_a_worker_gets_its_own_replica_back(self) -> None:
        """A worker that gave its replica back (suspended, say) and asks again while nobody
        continued it resumes its own checkpoints."""
        _job, [w0, _w1], [a, _b] = self.replicated_task()
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.give_back(w0, a)
        [again] = self.work(w0)
        assert self.restored(again) == [digest_of("manifest a1")]

    def test_a_replicas_result_drops_its_lineage_and_a_disagreement_starts_afresh(self) -> None:
        """A replica that returned its result needs its checkpoints no more; the extra replica
        asked for by two results that differ starts from scratch."""
        job, [w0, w1, w2], [a, b] = self.replicated_task(workers=3)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.save(w1, checkpoint(b.attempt, "b1", "b-chunk"))
        self.report(w0, a, "one")
        self.successResultOf(self.book.dropping())
        assert self.book.kept(job, "long", 1) == []
        assert self.stored() == [("long", 2)]
        assert digest_of("a-chunk") in {d for _, d in self.drops.dropped}
        self.report(w1, b, "two")
        [c] = self.work(w2)
        assert self.restored(c) == []
        # A lineage is named after the attempt that opened it.
        assert c.number == 3
        self.save(w2, checkpoint(c.attempt, "c1", "c-chunk"))
        assert [r.manifest for r in self.book.kept(job, "long", 3)] == [digest_of("manifest c1")]
        self.report(w2, c, "one")
        self.successResultOf(self.book.dropping())
        assert self.stored() == []

    def test_a_restarted_coordinator_hands_a_lost_replicas_lineage_on(self) -> None:
        """Lineages and who contributed to them are read back from the store."""
        job, [w0, w1, w2, w3], [a, b] = self.replicated_task(workers=4)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.save(w1, checkpoint(b.attempt, "b1", "b-chunk"))
        self.give_back(w0, a)
        [c] = self.work(w2)
        self.coordinator = self.build()
        assert [r.manifest for r in self.book.kept(job, "long", 2)] == [digest_of("manifest b1")]
        # Still running on w1 and w2 (recovered). w1's replica goes; once w2's result is in
        # (a restarted coordinator plans the vote again from the first result), the lineage
        # w1 left is handed on, though not to w0, which contributed to the other replica
        # before the restart.
        self.give_back(w1, b)
        self.report(w2, c, "one")
        assert self.work(w0) == []
        [d] = self.work(w3)
        assert self.restored(d) == [digest_of("manifest b1")]

    def test_a_result_that_crossed_workers_teaches_nothing_of_reliability(self) -> None:
        """Outvoted, a replica that continued another worker's checkpoints does not count
        against the worker that returned it: which of the two erred cannot be told."""
        _job, [w0, w1, w2, w3], [a, b] = self.replicated_task(workers=4)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.give_back(w0, a)
        [c] = self.work(w2)
        self.report(w2, c, "wrong")
        self.report(w1, b, "right")
        [d] = self.work(w3)
        assert self.restored(d) == []
        self.report(w3, d, "right")
        self.clock.advance(0)
        records = self.successResultOf(self.db.read(reliability_queries.load_records_thd))
        by_name = {r.identity.split("/")[1]: (r.agreed, r.disagreed) for r in records}
        assert by_name == {"w1": (1, 0), "w3": (1, 0)}

    def test_a_replica_handed_on_is_not_taken_back_from_its_late_worker(self) -> None:
        """A worker presumed lost whose replica was handed on, heard of again, neither votes
        for that replica nor runs it beside its new worker: one replica, one ballot."""
        job, [w0, w1, w2], [a, b] = self.replicated_task(workers=3)
        self.save(w0, checkpoint(a.attempt, "a1", "a-chunk"))
        self.successResultOf(ensureDeferred(self.coordinator.tasks.workers_lost([w0])))
        [c] = self.work(w2)
        assert self.restored(c) == [digest_of("manifest a1")]
        output = OutputFile("o", digest_of("late"), 3)
        self.store_objects(output.digest)
        late = AttemptResult(a.attempt, "succeeded", 0, outputs=(output,))
        counted = self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, w0, late))
        )
        assert counted is False
        self.report(w1, b, "right")
        assert self.book.kept(job, "long", 1) != []
        self.report(w2, c, "right")
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job))
        assert rows[0].state == "done"

    def test_a_chunk_being_dropped_is_not_named_by_another_replicas_save(self) -> None:
        """Replicas of one program save the same chunks: one dropped from a superseded
        checkpoint of one replica is refused in the other's save while it is being deleted,
        and accepted once stored again, so no kept checkpoint names a deleted chunk."""
        job, [w0, w1], [a, b] = self.replicated_task()
        for n in (1, 2):
            self.save(w0, checkpoint(a.attempt, f"a{n}", f"step {n}"))
        self.drops.held = True
        self.save(w0, checkpoint(a.attempt, "a3", "step 3"))
        assert digest_of("step 1") in {d for _, d in self.drops.dropped}
        same = checkpoint(b.attempt, "b1", "step 1")
        self.store_objects(same.manifest)
        failure = self.failureResultOf(ensureDeferred(self.book.record(w1, same)))
        assert failure.check(MissingObjects)
        assert failure.value.digests == [digest_of("step 1")]
        assert self.book.kept(job, "long", 2) == []
        self.drops.release()
        self.successResultOf(self.book.dropping())
        assert not self.coordinator.catalog.has(digest_of("step 1"))
        assert self.save(w1, same).recorded
