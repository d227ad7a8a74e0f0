"""Results checked by replication: replicas on different workers, the vote, its verdicts."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, digest_of, wire_job
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.coordinator.reliability import Reliability
from xwch.coordinator.replication import SecondReplica
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult
from xwch.store import jobs as job_queries
from xwch.store import reliability as reliability_queries


class QuorumTests(CoordinatorTestCase):
    def work(self, worker_id: str, slots: int = 2) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, slots)
            )
        )

    def report(self, worker_id: str, a: Assignment, content: str = "right") -> bool:
        outputs = tuple(OutputFile(o, digest_of(content + o), 3) for o in a.outputs)
        self.store_objects(*(o.digest for o in outputs))
        result = AttemptResult(a.attempt, "succeeded", exit_code=0, outputs=outputs, stdout="ok")
        return self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def states(self, job_id: str) -> dict[str, str]:
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job_id))
        return {r.id: r.state for r in rows}

    def job(self, job_id: str) -> Any:
        return self.successResultOf(self.db.read(job_queries.job_summary_thd, job_id))

    def log(self, job_id: str, task: str, number: int) -> Any:
        return self.successResultOf(self.db.read(job_queries.attempt_log_thd, job_id, task, number))

    def quorum_job(self, **keys: Any) -> str:
        return self.submit(
            wire_job(
                [
                    {"id": "x", "outputs": ["o.txt"], **keys},
                    {
                        "id": "y",
                        "inputs": [{"local": "o.txt", "task": "x", "output": "o.txt"}],
                        "outputs": ["p.txt"],
                    },
                ],
                results=[{"task": "y", "output": "p.txt"}],
            )
        )

    def test_replicas_run_on_different_workers_and_agreement_finishes_the_task(self) -> None:
        """A task with a quorum of 2 runs on two workers, never twice on one; when both agree,
        the next task reads that output."""
        job = self.quorum_job(quorum=2, max_attempts=4)
        a, b = self.register("a"), self.register("b")
        [first] = self.work(a)
        # The worker holding one replica gets no second one, however many slots it has.
        self.assertEqual(self.work(a), [])
        [second] = self.work(b)
        self.assertEqual((first.task, second.task), ("x", "x"))
        self.assertNotEqual(first.attempt, second.attempt)
        self.assertTrue(self.report(a, first))
        self.assertEqual(self.states(job)["x"], "assigned")
        self.assertTrue(self.report(b, second))
        self.assertEqual(self.states(job), {"x": "done", "y": "ready"})
        [reader] = self.work(a)
        self.assertEqual(reader.inputs[0].digest, digest_of("righto.txt"))

    def test_a_wrong_result_is_outvoted_by_a_third_replica(self) -> None:
        """Two results that differ start a third replica; the two that agree win, and the
        odd one's attempt says it was outvoted."""
        job = self.quorum_job(quorum=2)
        a, b, c = self.register("a"), self.register("b"), self.register("c")
        [first], [second] = self.work(a), self.work(b)
        self.assertEqual(self.work(c), [])
        self.report(a, first, "wrong")
        self.report(b, second, "right")
        self.assertEqual(self.states(job)["x"], "assigned")
        # Neither a nor b may add a vote: the third replica goes to c.
        self.assertEqual(self.work(a) + self.work(b), [])
        [third] = self.work(c)
        self.report(c, third, "right")
        self.assertEqual(self.states(job)["x"], "done")
        [reader] = self.work(a)
        self.assertEqual(reader.inputs[0].digest, digest_of("righto.txt"))
        odd = self.log(job, "x", first.number)
        self.assertEqual(odd.state, "failed")
        self.assertIn("outvoted", odd.error)
        self.assertEqual(odd.stdout, "ok")
        self.clock.advance(0)
        records = self.successResultOf(self.db.read(reliability_queries.load_records_thd))
        by_name = {r.identity.split("/")[1]: r for r in records}
        self.assertEqual((by_name["a"].disagreed, by_name["b"].agreed), (1, 1))

    def test_a_task_wanting_more_replicas_than_workers_says_so(self) -> None:
        """A quorum of 3 with two live workers: the task wants a third replica that no live
        worker may take, and the job's status says why, before and after the two answer; a
        third worker arriving ends the wait."""
        job = self.quorum_job(quorum=3, max_attempts=5)
        a, b = self.register("a"), self.register("b")
        [first], [second] = self.work(a), self.work(b)
        self.assertEqual(list(self.unrunnable(job)), ["x"])
        self.report(a, first)
        self.report(b, second)
        [why] = self.unrunnable(job).values()
        self.assertIn("wants 1 more replica(s)", why)
        self.assertIn("none of the 2 live trusted worker(s) qualifies", why)
        c = self.register("c")
        self.assertEqual(self.unrunnable(job), {})
        [third] = self.work(c)
        self.report(c, third)
        self.assertEqual(self.states(job)["x"], "done")

    def unrunnable(self, job_id: str) -> dict[str, str]:
        workers = self.coordinator.workers
        return self.coordinator.tasks.unrunnable(
            job_id, workers.live_platforms(), workers.live_trust()
        )

    def test_no_quorum_fails_the_task_with_a_message(self) -> None:
        """Results that never agree by max_attempts fail the task and say so."""
        job = self.quorum_job(quorum=2, max_attempts=3)
        workers = [self.register(n) for n in "abc"]
        [first], [second] = self.work(workers[0]), self.work(workers[1])
        self.report(workers[0], first, "one")
        self.report(workers[1], second, "two")
        [third] = self.work(workers[2])
        self.report(workers[2], third, "three")
        self.assertEqual(self.states(job), {"x": "failed", "y": "cancelled"})
        summary = self.job(job)
        self.assertEqual(summary.state, "failed")
        self.assertIn("task x no quorum: 3 results, 3 different", summary.message)
        for n in (1, 2, 3):
            self.assertIn("no quorum", self.log(job, "x", n).error)

    def test_a_failed_replica_is_replaced(self) -> None:
        """A replica whose attempt fails is run again on another worker."""
        job = self.quorum_job(quorum=2)
        a, b, c = self.register("a"), self.register("b"), self.register("c")
        [first], [second] = self.work(a), self.work(b)
        failed = AttemptResult(second.attempt, "failed", exit_code=1)
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, b, failed))
        )
        [again] = self.work(c)
        self.report(a, first)
        self.report(c, again)
        self.assertEqual(self.states(job)["x"], "done")

    def test_a_replica_given_back_is_replaced_while_the_other_runs(self) -> None:
        """A worker that gives its replica back (suspended past its limit) has it replaced at
        once on another worker, not once the other replica has returned."""
        job = self.quorum_job(quorum=2)
        a, b, c = self.register("a"), self.register("b"), self.register("c")
        [first], [second] = self.work(a), self.work(b)
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.give_back(self.worker_token, b, [second.attempt])
            )
        )
        [again] = self.work(c)
        self.assertEqual(again.task, "x")
        self.report(a, first)
        self.report(c, again)
        self.assertEqual(self.states(job)["x"], "done")

    def test_a_worker_cannot_fill_two_replicas(self) -> None:
        """A second result from one worker for one task is refused; the vote goes on."""
        job = self.quorum_job(quorum=2)
        a, b = self.register("a"), self.register("b")
        [first] = self.work(a)
        self.report(a, first)
        replicas = self.coordinator.tasks.replicated.replicas
        # As if a were given another replica (a worker lost and back holds an old one).
        vote = replicas.vote_of((job, "x"))
        assert vote is not None
        [second] = self.work(b)
        self.coordinator.tasks.attempts[second.attempt].worker_id = a
        outputs = (OutputFile("o.txt", digest_of("righto.txt"), 3),)
        result = AttemptResult(second.attempt, "succeeded", 0, outputs=outputs)
        self.failureResultOf(
            ensureDeferred(self.coordinator.tasks.record_result(a, result)), SecondReplica
        )
        self.assertEqual(len(vote.returned), 1)
        self.assertEqual(self.states(job)["x"], "assigned")

    def test_a_worker_that_loses_votes_is_distrusted_and_gets_no_work(self) -> None:
        """After several lost votes a worker is shown distrusted and given nothing more."""
        cheat, b, c = self.register("cheat"), self.register("b"), self.register("c")
        for _ in range(Reliability.DISTRUST_AFTER):
            self.submit(wire_job([{"id": "x", "outputs": ["o.txt"], "quorum": 2}]))
            [mine] = self.work(cheat)
            [theirs] = self.work(b)
            self.report(cheat, mine, "wrong")
            self.report(b, theirs, "right")
            [third] = self.work(c)
            self.report(c, third, "right")
        states = {w.name: w.state for w in self.coordinator.workers.list()}
        self.assertEqual(states, {"cheat": "distrusted", "b": "alive", "c": "alive"})
        self.submit(wire_job([{"id": "z"}]))
        self.assertEqual(self.work(cheat), [])
        # The record is in the store (written at the end of the turn): a coordinator started
        # again knows it.
        self.clock.advance(0)
        restarted = self.build()
        self.successResultOf(ensureDeferred(restarted.tasks.recover()))
        records = restarted.tasks.replicated.replicas.reliability.all()
        self.assertTrue(any(r.distrusted for r in records.values()))

    def test_adaptive_tasks_run_once_on_trusted_workers(self) -> None:
        """An adaptive task is replicated on an unknown worker and runs once on a worker with
        a long record of agreeing results (spot checks aside)."""
        a, b = self.register("a"), self.register("b")
        reliability = self.coordinator.tasks.replicated.replicas.reliability
        reliability.voted([f"{self.worker_token.id}/a"] * Reliability.TRUST_AFTER, [])
        self.coordinator.tasks.replicated.replicas.chance.seed(1)
        singles = 0
        for _ in range(20):
            job = self.submit(wire_job([{"id": "x", "outputs": ["o.txt"], "quorum": "adaptive"}]))
            [mine] = self.work(a)
            others = self.work(b)
            self.report(a, mine)
            if not others:
                singles += 1
                self.assertEqual(self.states(job)["x"], "done")
            else:
                self.report(b, others[0])
                self.assertEqual(self.states(job)["x"], "done")
        self.assertLess(singles, 20)
        self.assertGreater(singles, 10)
        # b has no record yet: its tasks are replicated.
        self.submit(wire_job([{"id": "x", "outputs": ["o.txt"], "quorum": "adaptive"}]))
        self.assertEqual(len(self.work(b)), 1)
        self.assertEqual(len(self.work(a)), 1)

    def test_a_worker_losing_a_vote_has_its_unconfirmed_results_checked_again(self) -> None:
        """A result accepted on a trusted worker's word alone runs again on other workers when
        that worker loses a vote; found wrong, it is replaced and the job is told."""
        a, b, c = self.register("a"), self.register("b"), self.register("c")
        replicas = self.coordinator.tasks.replicated.replicas
        replicas.reliability.voted([f"{self.worker_token.id}/a"] * Reliability.TRUST_AFTER, [])
        replicas.reliability.SPOT_CHECK = 0.0  # this test wants no spot check
        job = self.submit(
            wire_job(
                [
                    {"id": "x", "outputs": ["o.txt"], "quorum": "adaptive"},
                    {"id": "w", "after": ["x"], "quorum": 2, "outputs": ["w.txt"]},
                ]
            )
        )
        [single] = self.work(a)
        self.assertEqual(self.work(b), [])
        self.report(a, single, "wrong")
        self.assertEqual(self.states(job), {"x": "done", "w": "ready"})
        # a loses the vote on w.
        [mine], [theirs] = self.work(a), self.work(b)
        self.report(a, mine, "wrong")
        self.report(b, theirs, "right")
        [third] = self.work(c)
        self.assertEqual(third.task, "w")
        self.report(c, third, "right")
        # x runs again, on b and c only.
        self.assertEqual(self.states(job)["x"], "ready")
        self.assertEqual(self.work(a), [])
        [check_b], [check_c] = self.work(b), self.work(c)
        self.assertEqual((check_b.task, check_c.task), ("x", "x"))
        self.report(b, check_b, "right")
        self.report(c, check_c, "right")
        summary = self.job(job)
        self.assertEqual(summary.state, "done")
        self.assertIn("task x: a result accepted from one worker was found wrong", summary.message)
        self.assertIn("tasks that had read it: w", summary.message)
        self.assertIn("checked again", self.log(job, "x", single.number).error)

    def compare_job(self) -> str:
        wire = wire_job([{"id": "x", "outputs": ["o.txt"], "quorum": 2, "compare": "near"}])
        wire["binaries"]["near"] = wire["binaries"]["prog"]
        return self.submit(wire)

    def answer(self, worker_id: str, a: Assignment, code: int) -> None:
        outcome = "succeeded" if code == 0 else "failed"
        result = AttemptResult(a.attempt, outcome, exit_code=code)
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def test_a_compare_program_on_a_worker_decides_that_two_results_agree(self) -> None:
        """Results that differ are handed to the job's compare program, run like a task on a
        worker with one result in a/ and the other in b/; its exit 0 makes them agree."""
        job = self.compare_job()
        a, b = self.register("a"), self.register("b")
        [first], [second] = self.work(a), self.work(b)
        self.report(a, first, "1.0000001")
        self.report(b, second, "1.0000002")
        [comparison] = self.work(a)
        self.assertEqual(comparison.args, ("a", "b"))
        self.assertEqual(
            {(i.path, i.digest) for i in comparison.inputs},
            {("a/o.txt", digest_of("1.0000001o.txt")), ("b/o.txt", digest_of("1.0000002o.txt"))},
        )
        self.assertEqual(self.states(job)["x"], "assigned")
        self.answer(a, comparison, 0)
        self.assertEqual(self.states(job)["x"], "done")
        self.assertEqual(self.job(job).state, "done")
        # Its run is kept as an attempt of a task of its own, for `logs`.
        self.assertEqual(comparison.task, "x~compare-1")
        self.assertEqual(self.log(job, "x~compare-1", 1).state, "succeeded")

    def test_a_compare_program_that_says_no_asks_for_another_replica(self) -> None:
        job = self.compare_job()
        a, b, c = self.register("a"), self.register("b"), self.register("c")
        [first], [second] = self.work(a), self.work(b)
        self.report(a, first, "1.0")
        self.report(b, second, "7.0")
        [comparison] = self.work(c)
        # No replica starts while the comparison runs: its answer may settle the vote.
        self.assertEqual(self.work(c), [])
        self.answer(c, comparison, 1)
        [third] = self.work(c)
        self.assertEqual(third.task, "x")
        self.report(c, third, "1.0")
        self.assertEqual(self.states(job)["x"], "done")
        self.assertIn("outvoted", self.log(job, "x", second.number).error)


class FifoQuorumTests(QuorumTests):
    """The same behaviour under the fifo scheduler: replication does not depend on a policy."""

    def build(self) -> Coordinator:
        config = CoordinatorConfig(db_url=self.url, alive_interval=5.0, scheduler="fifo")
        return self.successResultOf(
            ensureDeferred(
                make_coordinator(config, self.clock, db=self.db, request_copy=self.copies.request)
            )
        )
