"""Fault tolerance in the coordinator: late results, poison tasks, quarantine, lineage, the
scanner's repairs, replication and rescue."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, diamond, digest_of, wire_job
from xwch.coordinator.health import WorkerHealth
from xwch.coordinator.scanner import REPAIR_ABANDONED, REPAIR_DUPLICATES, REPAIR_ORPHANS
from xwch.coordinator.tasks import TasksManager
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult, RunningAttempt
from xwch.store import jobs as job_queries


class FaultToleranceTests(CoordinatorTestCase):
    def work(self, worker_id: str, slots: int = 2) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, slots)
            )
        )

    def outputs_of(self, a: Assignment) -> tuple[OutputFile, ...]:
        outputs = tuple(OutputFile(o, digest_of(a.task + o), 3) for o in a.outputs)
        self.store_objects(*(o.digest for o in outputs))
        return outputs

    def report(self, worker_id: str, a: Assignment, ok: bool = True) -> bool:
        if ok:
            result = AttemptResult(a.attempt, "succeeded", 0, outputs=self.outputs_of(a))
        else:
            result = AttemptResult(a.attempt, "failed", 1, stderr="boom")
        return self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def alive(self, worker_id: str, *attempts: str) -> list[str]:
        cancels, _ = self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.alive(
                    self.worker_token, worker_id, [RunningAttempt(a) for a in attempts]
                )
            )
        )
        return cancels

    def lose(self, silent: str, *keep: str) -> None:
        """Let ``silent`` be declared lost while the workers in ``keep`` signal."""
        workers = self.coordinator.workers
        for _ in range(4):
            self.clock.advance(workers.alive_interval)
            for worker in keep:
                self.alive(worker, *self.coordinator.tasks.running_on(worker))
        self.assertNotIn(silent, workers.workers)

    def states(self, job_id: str) -> dict[str, str]:
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job_id))
        return {r.id: r.state for r in rows}

    def summary(self, job_id: str) -> Any:
        return self.successResultOf(self.db.read(job_queries.job_summary_thd, job_id))

    def start(self) -> None:
        self.coordinator.startService()
        self.addCleanup(self.coordinator.stopService)

    def test_late_result_after_relaunch_is_recorded_once(self) -> None:
        """A lost worker's late success counts once; the relaunched attempt is cancelled."""
        job = self.submit(wire_job([{"id": "x", "outputs": ["o"]}]))
        first = self.register("first")
        [a] = self.work(first)
        second = self.register("second")
        self.start()
        self.lose(first, second)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [b] = self.work(second)
        # The first worker comes back under a new id and reports its old attempt.
        back = self.register("first")
        self.assertTrue(self.report(back, a))
        self.assertEqual(self.states(job), {"x": "done"})
        self.assertEqual(self.alive(second, b.attempt), [b.attempt])
        self.assertFalse(self.report(second, b))
        outputs = self.successResultOf(self.db.read(job_queries.outputs_thd, job))
        self.assertEqual([o.digest for o in outputs], [digest_of("xo")])
        self.assertEqual(self.summary(job).state, "done")

    def test_a_worker_started_again_hands_its_attempts_on_at_once(self) -> None:
        """A worker that restarted names the registration it replaces: that one is lost at
        once (not once its silence times out) and its attempt goes to another worker."""
        job = self.submit(wire_job([{"id": "x", "outputs": ["o"]}]))
        first = self.register("first")
        [a] = self.work(first)
        self.start()
        again = self.register("first", replaces=first)
        workers = self.coordinator.workers
        self.assertNotIn(first, workers.workers)
        self.assertIn(again, workers.workers)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [b] = self.work(again)
        self.assertEqual(b.task, a.task)
        self.assertNotEqual(b.attempt, a.attempt)
        self.assertTrue(self.report(again, b))
        self.assertEqual(self.states(job), {"x": "done"})

    def test_only_a_workers_own_registration_is_replaced(self) -> None:
        """Another name, another token or an unknown id replaces nothing."""
        first = self.register("first")
        workers = self.coordinator.workers
        self.register("second", replaces=first)
        self.register("first", replaces=first, token=self.token("worker"))
        self.register("first", replaces="k000000000000")
        self.assertIn(first, workers.workers)

    def test_late_result_for_a_finished_task_is_discarded(self) -> None:
        """Once the relaunched attempt has finished the task, a late result changes nothing."""
        job = self.submit(wire_job([{"id": "x", "outputs": ["o"]}, {"id": "y", "after": ["x"]}]))
        first = self.register("first")
        [a] = self.work(first, slots=1)
        second = self.register("second")
        self.start()
        self.lose(first, second)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [b] = self.work(second, slots=1)
        self.assertTrue(self.report(second, b))
        back = self.register("first")
        self.assertFalse(self.report(back, a))
        self.assertEqual(self.states(job), {"x": "done", "y": "ready"})

    def test_returning_worker_keeps_its_unfinished_attempt_and_drops_stale_ones(self) -> None:
        """A worker back from an outage keeps what is still useful and drops what is not."""
        job = self.submit(wire_job([{"id": "x"}, {"id": "y"}]))
        first = self.register("first", slots=2)
        a, b = self.work(first)
        other = self.register("other", slots=1)
        self.start()
        self.lose(first, other)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [again] = self.work(other, slots=1)
        self.assertTrue(self.report(other, again))
        back = self.register("first")
        done, pending = (a, b) if again.task == a.task else (b, a)
        # The attempt of the finished task is stale; the other task's is adopted again.
        self.assertEqual(self.alive(back, a.attempt, b.attempt), [done.attempt])
        self.assertEqual(self.states(job)[pending.task], "running")
        self.assertTrue(self.report(back, pending))
        self.assertEqual(self.summary(job).state, "done")

    def test_scanner_keeps_the_oldest_of_duplicate_attempts(self) -> None:
        """When a returning worker and a relaunch both hold a task, the scanner keeps one."""
        self.submit(wire_job([{"id": "x"}]))
        first = self.register("first")
        [a] = self.work(first)
        other = self.register("other")
        self.start()
        self.lose(first, other)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [b] = self.work(other)
        back = self.register("first")
        self.assertEqual(self.alive(back, a.attempt), [])
        found = self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(found[REPAIR_DUPLICATES], 1)
        self.assertEqual(self.alive(other, b.attempt), [b.attempt])
        self.assertEqual(self.coordinator.tasks.running_on(back), [a.attempt])

    def test_poison_task_fails_on_distinct_workers_despite_retries(self) -> None:
        """A task failing on three different workers fails for good, with its logs kept."""
        job = self.submit(wire_job([{"id": "poison", "retries": 10}]))
        workers = [self.register(f"w{n}", slots=1) for n in range(TasksManager.POISON_WORKERS)]
        for n, worker in enumerate(workers):
            self.advance(TasksManager.RELAUNCH_BACKOFF_MAX)
            [a] = self.work(worker, slots=1)
            self.assertEqual(a.number, n + 1)
            self.report(worker, a, ok=False)
        summary = self.summary(job)
        self.assertEqual(summary.state, "failed")
        self.assertIn("failed on 3 different workers", summary.message)
        log = self.successResultOf(self.db.read(job_queries.attempt_log_thd, job, "poison", None))
        self.assertEqual(log.stderr, "boom")

    def test_relaunches_back_off(self) -> None:
        """Each relaunch of a failing task waits twice as long as the one before."""
        self.submit(wire_job([{"id": "x", "retries": 5}]))
        worker = self.register()
        delay = TasksManager.RELAUNCH_BACKOFF
        for _ in range(3):
            [a] = self.work(worker)
            self.report(worker, a, ok=False)
            self.clock.advance(delay - 0.01)
            self.assertEqual(self.work(worker), [])
            self.clock.advance(0.01)
            delay *= 2

    def test_worker_failing_while_others_succeed_is_quarantined(self) -> None:
        """A machine whose attempts keep failing gets no work for a cooldown."""
        self.submit(wire_job([{"id": f"t{n}", "retries": 0} for n in range(4)], name="good"))
        good = self.register("good", slots=1)
        [ok] = self.work(good, slots=1)
        self.report(good, ok)
        bad = self.register("bad", slots=1)
        health = self.coordinator.tasks.health
        for _ in range(WorkerHealth.QUARANTINE_AFTER):
            health.failed(bad)
        self.assertEqual(self.work(bad), [])
        listed = {w.name: w.state for w in self.coordinator.workers.list()}
        self.assertEqual(listed["bad"], "quarantined")
        self.advance(WorkerHealth.QUARANTINE_COOLDOWN)
        self.assertEqual(len(self.work(bad, slots=1)), 1)

    def test_lost_intermediate_output_runs_its_producers_again(self) -> None:
        """When every copy of an output is gone, the tasks that made it run again, recursively."""
        catalog = self.coordinator.catalog
        spare = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        job = self.submit(
            wire_job(
                [
                    {"id": "a", "outputs": ["o"]},
                    {
                        "id": "b",
                        "inputs": [{"local": "i", "task": "a", "output": "o"}],
                        "outputs": ["o"],
                    },
                    {"id": "c", "inputs": [{"local": "i", "task": "b", "output": "o"}]},
                ]
            )
        )
        worker = self.register()
        for task in ("a", "b"):
            [t] = self.work(worker)
            self.assertEqual(t.task, task)
            outputs = tuple(OutputFile(o, digest_of(t.task + o), 3) for o in t.outputs)
            # Intermediate outputs land on the spare warehouse only.
            self.successResultOf(
                ensureDeferred(catalog.add_objects(spare.id, [(o.digest, 3) for o in outputs]))
            )
            result = AttemptResult(t.attempt, "succeeded", 0, outputs=outputs)
            self.successResultOf(
                ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
            )
        self.assertEqual(self.states(job)["c"], "ready")
        # The spare warehouse goes silent; the first one keeps heartbeating.
        self.clock.advance(catalog.warehouse_timeout + 1)
        self.successResultOf(ensureDeferred(catalog.heartbeat(self.warehouse.id, 10**9, 10**9)))
        # c's input is lost, so b runs again; b's input is lost too, so a runs first.
        [again] = self.work(worker)
        self.assertEqual((again.task, again.number), ("a", 2))
        self.assertEqual(self.states(job), {"a": "assigned", "b": "blocked", "c": "blocked"})

    def test_lost_client_upload_fails_the_job_with_a_clear_message(self) -> None:
        """If the only copies of an uploaded input are gone, the job fails saying so."""
        catalog = self.coordinator.catalog
        job = self.submit(wire_job([{"id": "x", "inputs": [{"local": "in", "file": "data"}]}]))
        # The warehouse holding it goes silent; another one, empty, keeps heartbeating.
        other = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        self.clock.advance(catalog.warehouse_timeout + 1)
        self.successResultOf(ensureDeferred(catalog.heartbeat(other.id, 10**9, 10**9)))
        worker = self.register()
        self.assertEqual(self.work(worker), [])
        summary = self.summary(job)
        self.assertEqual(summary.state, "failed")
        self.assertIn("uploaded by the client is lost", summary.message)

    def test_every_warehouse_silent_is_waited_out_not_taken_for_lost_inputs(self) -> None:
        """All warehouses silent at once (an outage, or a coordinator too busy to hear them):
        the job waits, and runs once they are heard again."""
        catalog = self.coordinator.catalog
        job = self.submit(wire_job([{"id": "x", "inputs": [{"local": "in", "file": "data"}]}]))
        self.clock.advance(catalog.warehouse_timeout + 1)
        worker = self.register()
        self.assertEqual(self.work(worker), [])
        self.assertEqual(self.summary(job).state, "running")
        self.successResultOf(ensureDeferred(catalog.heartbeat(self.warehouse.id, 10**9, 10**9)))
        [given] = self.work(worker)
        self.assertEqual(given.task, "x")

    def test_retry_runs_failed_and_cancelled_tasks_keeping_done_ones(self) -> None:
        """`retry` reruns what failed or was cancelled; what was done is not run again."""
        job = self.submit(diamond())
        worker = self.register()
        [a] = self.work(worker)
        self.report(worker, a)
        b, c = self.work(worker)
        self.report(worker, b)
        for _ in range(4):
            self.report(worker, c, ok=False)
            self.advance(TasksManager.RELAUNCH_BACKOFF_MAX)
            found = self.work(worker)
            if not found:
                break
            [c] = found
        self.assertEqual(self.summary(job).state, "failed")
        self.assertEqual(
            self.states(job), {"a": "done", "b": "done", "c": "failed", "d": "cancelled"}
        )
        self.successResultOf(ensureDeferred(self.coordinator.tasks.retry(job)))
        self.assertEqual(self.summary(job).state, "running")
        self.assertEqual(self.states(job), {"a": "done", "b": "done", "c": "ready", "d": "blocked"})
        [c] = self.work(worker)
        self.assertEqual(c.task, "c")
        self.report(worker, c)
        [d] = self.work(worker)
        self.report(worker, d)
        self.assertEqual(self.summary(job).state, "done")

    def test_retry_refuses_running_or_done_jobs(self) -> None:
        """Only an ended, unsuccessful job can be retried."""
        from xwch.coordinator.tasks import JobStillRunning, UnknownJob

        job = self.submit(wire_job([{"id": "x"}]))
        self.failureResultOf(ensureDeferred(self.coordinator.tasks.retry(job)), JobStillRunning)
        self.failureResultOf(ensureDeferred(self.coordinator.tasks.retry("jnope")), UnknownJob)

    def test_scanner_repairs_orphans_and_abandoned_attempts(self) -> None:
        """Ready tasks nobody holds go back to the ready set; attempts of vanished workers run again."""
        job = self.submit(wire_job([{"id": "x"}, {"id": "y"}]))
        self.coordinator.scheduler.remove((job, "x"))
        worker = self.register(slots=1)
        [a] = self.work(worker, slots=1)
        self.assertEqual(a.task, "y")
        # The worker vanishes from the registry without a loss being noticed (a bug elsewhere).
        del self.coordinator.workers.workers[worker]
        found = self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual((found[REPAIR_ORPHANS], found[REPAIR_ABANDONED]), (1, 1))
        self.assertEqual(self.coordinator.scanner.repairs[REPAIR_ORPHANS], 1)
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        again = self.register(slots=2)
        self.assertEqual(sorted(t.task for t in self.work(again)), ["x", "y"])

    def test_the_orphan_sweep_lets_requests_in_between_slices(self) -> None:
        """Over a big job, the sweep for orphans gives the reactor back every slice of tasks
        (requests are served in between) and still repairs every orphan; a job that ends
        between two slices is left alone."""
        repairs = self.coordinator.tasks.repairs
        repairs.SLICE = 2
        big = self.submit(wire_job([{"id": f"t{n}"} for n in range(5)]))
        ending = self.submit(wire_job([{"id": "u0"}, {"id": "u1"}]))
        for key in [(big, "t0"), (big, "t4"), (ending, "u1")]:
            self.coordinator.scheduler.remove(key)
        sweep = ensureDeferred(repairs.orphans())
        self.assertNoResult(sweep)  # a slice looked at: the reactor has its turn
        self.successResultOf(ensureDeferred(self.coordinator.tasks.cancel(ending)))
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(sweep), 2)  # t0 and t4; not the cancelled u1
        self.assertTrue(self.coordinator.scheduler.is_ready((big, "t4")))
        self.assertFalse(self.coordinator.scheduler.is_ready((ending, "u1")))

    def test_objects_are_copied_to_a_second_warehouse(self) -> None:
        """Every object gets a second copy on another warehouse when one exists."""
        catalog = self.coordinator.catalog
        second = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(
            sorted(self.copies.requests),
            sorted(
                [
                    ("http://127.0.0.1:8", digest_of("binary")),
                    ("http://127.0.0.1:8", digest_of("data")),
                ]
            ),
        )
        # Not asked again while the copies are on their way, nor once they have landed.
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(len(self.copies.requests), 2)
        self.successResultOf(
            ensureDeferred(
                catalog.add_objects(second.id, [(digest_of("binary"), 6), (digest_of("data"), 4)])
            )
        )
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(len(self.copies.requests), 2)

    def test_workers_failing_together_are_not_quarantined(self) -> None:
        """When every worker fails (a broken job, not broken machines), nobody is quarantined."""
        health = WorkerHealth(self.clock)
        for _ in range(2 * WorkerHealth.QUARANTINE_AFTER):
            health.failed("a")
            health.failed("b")
        self.assertFalse(health.is_quarantined("a") or health.is_quarantined("b"))

    def test_a_failed_task_goes_to_another_worker_when_there_is_one(self) -> None:
        """A task that failed on a worker is relaunched on another one if possible."""
        self.submit(wire_job([{"id": "x", "retries": 3}]))
        first = self.register("first", slots=1)
        other = self.register("other", slots=1)
        [a] = self.work(first, slots=1)
        self.report(first, a, ok=False)
        self.advance(TasksManager.RELAUNCH_BACKOFF)
        self.assertEqual(self.work(first, slots=1), [])
        [b] = self.work(other, slots=1)
        self.assertEqual((b.task, b.number), ("x", 2))

    def test_copies_lost_with_a_restarted_warehouse_are_asked_for_again(self) -> None:
        """A warehouse that restarts empty gets its copies again, even those under way."""
        catalog = self.coordinator.catalog
        second = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(len(self.copies.requests), 2)
        # One copy lands, then the warehouse restarts on a new disk, the other copy lost.
        self.successResultOf(
            ensureDeferred(catalog.add_objects(second.id, [(digest_of("binary"), 6)]))
        )
        self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:8", "lab", 10**9, 10**9))
        )
        self.successResultOf(ensureDeferred(catalog.replace_objects(second.id, [])))
        self.successResultOf(ensureDeferred(self.coordinator.scanner.scan()))
        self.assertEqual(len(self.copies.requests), 4)
