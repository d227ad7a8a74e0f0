"""The task state machine: blocked, ready, running, done; failure and retry; lost workers; cancel."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import BINARY, CoordinatorTestCase, diamond, digest_of, wire_job
from xwch.coordinator.attempts import NotYourAttempt
from xwch.coordinator.tasks import BadResult, MissingObjects, TasksManager
from xwch.errors import JobFileError
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult, RunningAttempt
from xwch.store import jobs as job_queries
from xwch.store import schema


class TaskStatesTests(CoordinatorTestCase):
    def work(self, worker_id: str, slots: int = 2) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker_id, 1.0, slots)
            )
        )

    def report_success(self, worker_id: str, a: Assignment) -> bool:
        outputs = tuple(OutputFile(o, digest_of(a.task + o), 3) for o in a.outputs)
        self.store_objects(*(o.digest for o in outputs))
        result = AttemptResult(a.attempt, "succeeded", exit_code=0, outputs=outputs, stdout="ok")
        return self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def report_failure(self, worker_id: str, a: Assignment, code: int = 3) -> bool:
        result = AttemptResult(a.attempt, "failed", exit_code=code, stderr="boom")
        return self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def states(self, job_id: str) -> dict[str, str]:
        rows = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job_id))
        return {r.id: r.state for r in rows}

    def job_state(self, job_id: str) -> Any:
        return self.successResultOf(self.db.read(job_queries.job_summary_thd, job_id))

    def test_diamond_runs_in_dependency_order(self) -> None:
        """Tasks wait for their inputs, run when ready, and the job is done when all are."""
        job = self.submit(diamond())
        self.assertEqual(
            self.states(job), {"a": "ready", "b": "blocked", "c": "blocked", "d": "blocked"}
        )
        worker = self.register()
        [a] = self.work(worker)
        self.assertEqual((a.task, a.number, a.inputs[0].digest), ("a", 1, digest_of("data")))
        self.assertEqual(set(a.sources), {BINARY, digest_of("data")})
        self.assertEqual(self.states(job)["a"], "assigned")
        self.assertTrue(self.report_success(worker, a))
        self.assertEqual(
            self.states(job), {"a": "done", "b": "ready", "c": "ready", "d": "blocked"}
        )
        b, c = self.work(worker)
        # b's input is a's output, found where a's worker stored it.
        self.assertEqual(b.inputs[0].digest, digest_of("aa.txt"))
        self.report_success(worker, b)
        self.assertEqual(self.work(worker), [])
        self.report_success(worker, c)
        [d] = self.work(worker)
        self.assertEqual({i.path for i in d.inputs}, {"b.txt", "c.txt"})
        self.report_success(worker, d)
        self.assertEqual(self.job_state(job).state, "done")
        self.assertEqual(self.coordinator.tasks.jobs, {})

    def test_a_task_held_ahead_is_assigned_until_its_worker_starts_it(self) -> None:
        """Handed out, a task is "assigned"; "running" once its worker says it started."""
        job = self.submit(wire_job([{"id": "x"}]))
        worker = self.register()
        [a] = self.work(worker)

        def alive(waiting: list[str]) -> None:
            self.successResultOf(
                ensureDeferred(
                    self.coordinator.workers.alive(
                        self.worker_token, worker, [RunningAttempt(a.attempt)], waiting=waiting
                    )
                )
            )

        def row() -> tuple[str, float | None]:
            [info] = self.successResultOf(self.db.read(job_queries.list_tasks_thd, job))
            return info.state, info.started

        self.assertEqual(row(), ("assigned", None))
        alive(waiting=[a.attempt])
        self.assertEqual(row(), ("assigned", None))
        self.clock.advance(2)
        alive(waiting=[])
        self.assertEqual(row(), ("running", self.clock.seconds()))
        self.report_success(worker, a)
        self.assertEqual(row()[0], "done")

    def test_failure_is_retried_then_fails_the_job(self) -> None:
        """A failing attempt is relaunched while retries last; then the task and job fail."""
        job = self.submit(wire_job([{"id": "x", "retries": 1}, {"id": "y", "after": ["x"]}]))
        worker = self.register()
        [first] = self.work(worker)
        self.report_failure(worker, first)
        self.assertEqual(self.states(job)["x"], "ready")
        # The relaunch waits out its back-off.
        self.assertEqual(self.work(worker), [])
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [second] = self.work(worker)
        self.assertEqual(second.number, 2)
        self.report_failure(worker, second, code=7)
        self.assertEqual(self.states(job), {"x": "failed", "y": "cancelled"})
        summary = self.job_state(job)
        self.assertEqual(summary.state, "failed")
        self.assertIn("task x failed after 2 attempts: exit status 7", summary.message)
        log = self.successResultOf(self.db.read(job_queries.attempt_log_thd, job, "x", None))
        self.assertEqual((log.attempt, log.exit_code, log.stderr), (2, 7, "boom"))

    def test_a_group_asked_of_a_lone_coordinator_is_ignored(self) -> None:
        """``?group=`` means something only on a store shared by several: a lone coordinator
        stores no group a caller made up (a long one would not even fit the column)."""
        job = self.successResultOf(
            ensureDeferred(
                self.coordinator.tasks.submit(
                    wire_job([{"id": "x"}]), owner=self.client.id, group="g" * 100
                )
            )
        )
        with self.db.engine.begin() as conn:
            [row] = conn.execute(sa.select(schema.jobs.c.id, schema.jobs.c.grp)).all()
        self.assertEqual((row.id, row.grp), (job, None))

    def test_dropped_managers_declare_no_worker_lost(self) -> None:
        """Managers dropped (their member rebuilds them from the store) decide nothing more:
        workers they have not heard from for a while are not written as lost."""
        silent = self.register("silent")
        workers = self.coordinator.workers
        self.clock.advance(workers.alive_timeout + 1)
        self.coordinator.tasks.close()
        self.successResultOf(ensureDeferred(workers._check()))
        self.assertIn(silent, workers.workers)
        with self.db.engine.begin() as conn:
            [row] = conn.execute(sa.select(schema.workers.c.state)).all()
        self.assertEqual(row.state, "alive")

    def test_lost_worker_has_its_attempts_relaunched(self) -> None:
        """A worker silent past the timeout is lost and its attempt runs on another worker."""
        job = self.submit(wire_job([{"id": "x"}]))
        silent = self.register("silent")
        [attempt] = self.work(silent)
        other = self.register("other")
        workers = self.coordinator.workers
        self.coordinator.startService()
        self.addCleanup(self.coordinator.stopService)
        for _ in range(4):
            self.clock.advance(workers.alive_interval)
            self.successResultOf(ensureDeferred(workers.alive(self.worker_token, other, [])))
        self.assertNotIn(silent, workers.workers)
        self.assertEqual(self.states(job)["x"], "ready")
        self.clock.advance(TasksManager.RELAUNCH_BACKOFF)
        [again] = self.work(other)
        self.assertEqual((again.task, again.number), ("x", 2))
        # The lost worker's late result is not recorded over the new attempt.
        self.assertRaisesRegex(Exception, "not registered", self.report_success, silent, attempt)

    def test_cancel_kills_running_attempts_and_discards_their_results(self) -> None:
        """Cancelling a job tells its workers to kill the attempts and stops the job."""
        job = self.submit(wire_job([{"id": "x"}, {"id": "y"}, {"id": "z", "after": ["x"]}]))
        worker = self.register(slots=1)
        [a] = self.work(worker, slots=1)
        self.assertTrue(self.successResultOf(ensureDeferred(self.coordinator.tasks.cancel(job))))
        self.assertEqual(set(self.states(job).values()), {"cancelled"})
        self.assertEqual(self.job_state(job).state, "cancelled")
        cancels, _ = self.successResultOf(
            ensureDeferred(self.coordinator.workers.alive(self.worker_token, worker, []))
        )
        self.assertEqual(cancels, [a.attempt])
        self.assertFalse(self.report_success(worker, a))
        self.assertEqual(self.work(worker), [])

    def test_worker_running_an_unknown_attempt_is_told_to_kill_it(self) -> None:
        """A worker reporting an attempt the coordinator no longer knows is told to drop it."""
        worker = self.register()
        from xwch.protocol.worker import RunningAttempt

        cancels, _ = self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.alive(self.worker_token, worker, [RunningAttempt("stale")])
            )
        )
        self.assertEqual(cancels, ["stale"])

    def test_results_of_another_workers_attempt_are_refused(self) -> None:
        """A worker acts only on its own attempts."""
        self.submit(wire_job([{"id": "x"}]))
        owner = self.register("owner")
        intruder = self.register("intruder")
        [a] = self.work(owner)
        result = AttemptResult(a.attempt, "failed", exit_code=1)
        self.failureResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, intruder, result)),
            NotYourAttempt,
        )

    def test_result_with_wrong_or_unstored_outputs_changes_nothing(self) -> None:
        """Outputs must be the declared ones and stored at a warehouse before a result counts."""
        job = self.submit(wire_job([{"id": "x", "outputs": ["o.txt"]}]))
        worker = self.register()
        [a] = self.work(worker)
        wrong = AttemptResult(
            a.attempt, "succeeded", 0, outputs=(OutputFile("p.txt", digest_of("p"), 1),)
        )
        self.failureResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, wrong)),
            BadResult,
        )
        unstored = AttemptResult(
            a.attempt, "succeeded", 0, outputs=(OutputFile("o.txt", digest_of("nowhere"), 1),)
        )
        self.failureResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, unstored)),
            MissingObjects,
        )
        self.assertEqual(self.states(job)["x"], "assigned")
        self.assertTrue(self.report_success(worker, a))

    def test_small_outputs_travel_inline_to_readers_and_outlive_a_restart(self) -> None:
        """An output sent in its result is kept by the coordinator, at no warehouse: readers'
        assignments carry its bytes, and a restarted coordinator still has them."""
        job = self.submit(diamond())
        worker = self.register()
        [a] = self.work(worker)
        small = b"a's result\n"
        output = OutputFile("a.txt", hashlib.sha256(small).hexdigest(), len(small), small)
        result = AttemptResult(a.attempt, "succeeded", exit_code=0, outputs=(output,))
        self.assertTrue(
            self.successResultOf(
                ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
            )
        )
        self.assertEqual(self.coordinator.catalog.holders(output.digest), [])
        self.assertEqual(self.states(job)["b"], "ready")
        for reader in self.work(worker):
            self.assertEqual(dict(reader.inline), {output.digest: small})
            self.assertNotIn(output.digest, reader.sources)
        self.coordinator = self.build()
        self.assertEqual(self.coordinator.catalog.inline(output.digest), small)
        self.assertTrue(self.coordinator.catalog.has(output.digest))

    def test_invalid_job_or_missing_objects_create_nothing(self) -> None:
        """A job that is invalid or refers to unstored objects is refused and not created."""
        bad = wire_job([{"id": "x", "after": ["nope"]}])
        self.failureResultOf(
            ensureDeferred(self.coordinator.tasks.submit(bad, owner=1)), JobFileError
        )
        missing = wire_job([{"id": "x"}])
        missing["files"]["data"]["digest"] = digest_of("never uploaded")
        failure = self.failureResultOf(
            ensureDeferred(self.coordinator.tasks.submit(missing, owner=1)), MissingObjects
        )
        self.assertEqual(failure.value.digests, [digest_of("never uploaded")])
        self.assertEqual(self.successResultOf(self.db.read(job_queries.list_jobs_thd)), [])

    def test_tasks_go_only_to_workers_of_their_binarys_platform(self) -> None:
        """A worker only receives tasks whose binary exists for its platform."""
        wire = wire_job([{"id": "x"}])
        wire["binaries"]["prog"] = {
            "linux-aarch64": {"digest": BINARY, "size": 6, "bundle": False, "entry": None}
        }
        self.submit(wire)
        self.assertEqual(self.work(self.register("x86", "linux-x86_64")), [])
        [a] = self.work(self.register("arm", "linux-aarch64"))
        self.assertEqual(a.task, "x")

    def test_attempts_not_written_are_not_given(self) -> None:
        """If the store cannot record an attempt, the worker gets nothing and the task stays ready."""
        job = self.submit(wire_job([{"id": "x"}]))
        worker = self.register()
        self.db.fail_writes = True
        self.failureResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(self.worker_token, worker, 1.0, 1)
            ),
            RuntimeError,
        )
        self.db.fail_writes = False
        self.assertEqual(self.states(job)["x"], "ready")
        [a] = self.work(worker)
        self.assertEqual(a.number, 1)

    def test_given_back_attempts_run_again_without_counting_as_failures(self) -> None:
        """A stopping worker's attempts go to another worker and use no retry."""
        job = self.submit(wire_job([{"id": "x", "retries": 0}]))
        leaving = self.register("leaving")
        [a] = self.work(leaving)
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.give_back(self.worker_token, leaving, [a.attempt])
            )
        )
        [again] = self.work(self.register("staying"))
        self.assertEqual(again.task, "x")
        self.assertEqual(self.job_state(job).state, "running")

    def test_restart_resumes_running_jobs(self) -> None:
        """A coordinator restarted on the same store resumes jobs without redoing finished work."""
        job = self.submit(diamond())
        worker = self.register()
        [a] = self.work(worker)
        self.report_success(worker, a)
        b, c = self.work(worker)
        self.report_success(worker, b)
        restarted = self.build()
        tasks: TasksManager = restarted.tasks
        state = tasks.jobs[job]
        self.assertEqual(
            {k: t.state for k, t in state.tasks.items()},
            {"a": "done", "b": "done", "c": "running", "d": "blocked"},
        )
        self.assertIn(c.attempt, tasks.attempts)
        # The worker that held c is still known and may report it to the new coordinator.
        result = AttemptResult(
            c.attempt, "succeeded", 0, outputs=(OutputFile("c.txt", digest_of("cc.txt"), 3),)
        )
        self.successResultOf(
            ensureDeferred(
                restarted.catalog.add_objects(self.warehouse.id, [(digest_of("cc.txt"), 3)])
            )
        )
        self.assertTrue(
            self.successResultOf(
                ensureDeferred(restarted.workers.result(self.worker_token, worker, result))
            )
        )
        self.assertEqual(state.tasks["d"].state, "ready")

    def test_lost_workers_are_still_noticed_after_the_store_failed_once(self) -> None:
        """A store outage during one check does not stop the watch for lost workers."""
        self.submit(wire_job([{"id": "x"}]))
        silent = self.register("silent")
        self.work(silent)
        workers = self.coordinator.workers
        self.coordinator.startService()
        self.addCleanup(self.coordinator.stopService)
        self.db.fail_writes = True
        self.clock.advance(workers.alive_interval)
        self.db.fail_writes = False
        for _ in range(4):
            self.clock.advance(workers.alive_interval)
        self.assertNotIn(silent, workers.workers)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
