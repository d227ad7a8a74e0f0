"""Workers follow the work: a member lends idle workers to another member's group with ready
tasks, and drains busy ones when it has more slots than its share of the work."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred, succeed

from tests.unit.coordinator.harness import CoordinatorTestCase, digest_of, wire_job
from xwch.coordinator.lending import WorkerLending
from xwch.coordinator.web import STAYING
from xwch.protocol.objects import OutputFile
from xwch.protocol.states import TaskStatus
from xwch.protocol.wire import JOB_RUNNING
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import placement
from xwch.store.group_locks import Fences, claim_thd, ensure_groups_thd
from xwch.store.records import JobRow, NewTask

LEASE = 60.0


class LendingTests(CoordinatorTestCase):
    """This coordinator serves its own jobs and workers; ``g2`` is another member's, with a
    job of ``ready`` tasks waiting and no worker."""

    def setUp(self) -> None:
        super().setUp()
        with self.db.engine.begin() as conn:
            ensure_groups_thd(conn, ["g1"])
            epoch = claim_thd(conn, "g1", "c-me", LEASE, self.clock.seconds())
        assert epoch is not None
        self.coordinator.tasks.fence = Fences.of("c-me", {"g1": epoch})
        self.lending = WorkerLending(
            self.clock, self.db, lambda: self.coordinator.managers, self.coordinator.groups.locks
        )

    def elsewhere(self, ready: int) -> None:
        with self.db.engine.begin() as conn:
            ensure_groups_thd(conn, ["g2"])
            assert claim_thd(conn, "g2", "c-other", LEASE, self.clock.seconds()) is not None
            job_queries.create_job_thd(
                conn,
                JobRow("j-far", "far", 1, JOB_RUNNING, 0, 1.0, ready, "{}", group="g2"),
                [NewTask(f"t{i}", i, TaskStatus.READY, 1.0, 0) for i in range(ready)],
            )

    def waits(self, worker_id: str) -> Any:
        """A Work Request of ``worker_id`` waiting here for work."""
        waiting = self.coordinator.waiting
        return waiting.wait(worker_id, 30.0, lambda: succeed([]), STAYING, waiting.appeared)

    def lend(self) -> list[str]:
        return self.successResultOf(ensureDeferred(self.lending.lend()))  # type: ignore[no-any-return]

    def group_of(self, worker_id: str) -> str | None:
        with self.db.engine.begin() as conn:
            return placement.worker_group_thd(conn, worker_id)

    def work(self, worker_id: str) -> list[Assignment]:
        return self.successResultOf(  # type: ignore[no-any-return]
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, 2)
            )
        )

    def test_an_idle_worker_moves_to_a_group_with_ready_tasks_and_is_answered_at_once(
        self,
    ) -> None:
        worker = self.register()
        self.elsewhere(ready=3)
        answer = self.waits(worker)
        self.assertNoResult(answer)
        self.assertEqual(self.lend(), [worker])
        self.assertEqual(self.group_of(worker), "g2")
        self.assertNotIn(worker, self.coordinator.workers.workers)
        self.assertEqual(self.successResultOf(answer), [])

    def test_nothing_moves_while_no_other_group_has_ready_tasks(self) -> None:
        worker = self.register()
        self.elsewhere(ready=0)
        self.waits(worker)
        self.assertEqual(self.lend(), [])
        self.assertEqual(self.group_of(worker), "g1")
        self.assertIn(worker, self.coordinator.workers.workers)

    def test_a_busy_worker_beyond_the_share_gets_no_new_work_and_moves_once_done(self) -> None:
        self.submit(wire_job([{"id": f"t{i}", "outputs": ["o"]} for i in range(6)]))
        first, second = self.register("one"), self.register("two")
        given = {first: self.work(first), second: self.work(second)}
        self.assertEqual([len(g) for g in given.values()], [2, 2])
        # Here: 4 slots, 6 tasks to run. There: 12 ready, no slot. Here's share is 1 slot.
        self.elsewhere(ready=12)
        self.assertEqual(self.lend(), [])
        draining = self.coordinator.workers.draining
        self.assertEqual(len(draining), 1)
        (drained,) = draining
        self.assertEqual(self.work(drained), [])
        # Its attempts end: it moves at the next round; the other stays and works on.
        for a in given[drained]:
            self.report(drained, a)
        self.assertEqual(self.lend(), [drained])
        self.assertEqual(self.group_of(drained), "g2")
        kept = second if drained == first else first
        self.assertIn(kept, self.coordinator.workers.workers)

    def report(self, worker_id: str, a: Assignment) -> None:
        outputs = tuple(OutputFile(o, digest_of(a.task + o), 3) for o in a.outputs)
        self.store_objects(*(o.digest for o in outputs))
        result = AttemptResult(a.attempt, "succeeded", exit_code=0, outputs=outputs)
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )
