"""The coordinator's side of checkpoints: recorded from the attempt running the task, handed to
its relaunch newest first, and dropped from warehouses once superseded or once the task is done."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, digest_of, wire_job
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.coordinator.attempts import NotYourAttempt
from xwch.coordinator.checkpoints import CheckpointBook
from xwch.coordinator.tasks import MissingObjects, TasksManager
from xwch.protocol.checkpoints import CheckpointRecorded, CheckpointSaved
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store.checkpoints import load_checkpoints_thd


class RecordedDrops:
    """Stands in for warehouses asked to delete objects: records each request."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []

    async def request(self, url: str, digest: str, capability: str) -> None:
        assert capability
        self.dropped.append((url, digest))


def checkpoint(attempt: str, name: str, *chunks: str) -> CheckpointSaved:
    """A checkpoint of ``attempt`` whose manifest is named after ``name``."""
    return CheckpointSaved(
        attempt=attempt,
        manifest=digest_of(f"manifest {name}"),
        size=100,
        content=10 * len(chunks),
        chunks=tuple(digest_of(c) for c in chunks),
    )


class CheckpointTests(CoordinatorTestCase):
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

    def test_an_assignment_tells_where_and_how_often_to_save(self) -> None:
        _job, _worker, a = self.running_task()
        assert a.checkpoint is not None
        assert (a.checkpoint.path, a.checkpoint.every, a.checkpoint.restore) == ("ck/", 5.0, ())

    def test_replicas_keep_no_checkpoint_to_share(self) -> None:
        """A task checked by replication is given no checkpoint to save or restore, and a save
        sent all the same is not recorded: a replica resumed from another's checkpoint would
        vote with that one's result."""
        job = self.submit(
            wire_job([{"id": "long", "outputs": ["o"], "checkpoint": "ck/", "quorum": 2}])
        )
        self.jobs = [job]
        first, second = self.register("first"), self.register("second")
        [a] = self.work(first)
        [b] = self.work(second)
        assert (a.task, b.task) == ("long", "long")
        assert a.checkpoint is None and b.checkpoint is None
        answer = self.save(first, checkpoint(a.attempt, "1", "c1"))
        assert answer == CheckpointRecorded(recorded=False)
        assert self.stored() == []

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

    def test_a_restarted_coordinator_still_knows_the_kept_checkpoints(self) -> None:
        job, worker, a = self.running_task()
        self.save(worker, checkpoint(a.attempt, "1", "c1"))
        self.coordinator = self.build()
        book = self.coordinator.tasks.checkpoints
        assert book is not None
        assert [r.manifest for r in book.kept(job, "long")] == [digest_of("manifest 1")]
