"""The scheduler inside the coordinator: sites, caches, stragglers, prefetch, the FIFO switch."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, digest_of, wire_job
from xwch.coordinator.__main__ import main as coordinator_main
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.coordinator.locality import LocalityScheduler
from xwch.coordinator.scheduler import FifoScheduler
from xwch.coordinator.workers import WorkersManager
from xwch.protocol.objects import OutputFile
from xwch.protocol.worker import Assignment, AttemptResult, HostFacts
from xwch.store import jobs as job_queries
from xwch.store import schema

MIB = 1 << 20


def shard(n: int) -> str:
    return digest_of(f"shard-{n}")


def sharded_job(count: int, name: str = "shards") -> dict[str, Any]:
    """``count`` tasks, task i reading shard i (8 MiB each)."""
    job = wire_job(
        [
            {
                "id": f"t{n}",
                "inputs": [{"local": "in", "file": f"s{n}"}],
                "outputs": ["out"],
            }
            for n in range(count)
        ],
        name=name,
    )
    job["files"] = {f"s{n}": {"digest": shard(n), "size": 8 * MIB} for n in range(count)}
    return job


class SchedulingTests(CoordinatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        catalog = self.coordinator.catalog
        self.site_b = self.successResultOf(
            ensureDeferred(catalog.register("http://127.0.0.1:10", "b", 10**9, 10**9))
        )

    def store_at(self, warehouse_id: str, *digests: str, size: int = 8 * MIB) -> None:
        self.successResultOf(
            ensureDeferred(
                self.coordinator.catalog.add_objects(warehouse_id, [(d, size) for d in digests])
            )
        )

    def join(
        self,
        name: str,
        site: str | None,
        slots: int = 1,
        performance: float = 1.0,
        cached: tuple[str, ...] = (),
    ) -> str:
        facts = HostFacts(
            name, "127.0.0.1", "linux-x86_64", 2, 2**30, slots, performance, site, cached
        )
        record = self.successResultOf(
            ensureDeferred(self.coordinator.workers.register(self.worker_token, facts))
        )
        return record.id

    def work(
        self,
        worker_id: str,
        slots: int = 1,
        performance: float = 1.0,
        idle_slots: int | None = None,
    ) -> list[Assignment]:
        return self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.work_request(
                    self.worker_token, worker_id, performance, slots, idle_slots
                )
            )
        )

    def succeed(self, worker_id: str, a: Assignment, duration: float = 1.0) -> bool:
        outputs = tuple(OutputFile(o, digest_of(a.task + o), 3) for o in a.outputs)
        self.store_objects(*(o.digest for o in outputs))
        result = AttemptResult(a.attempt, "succeeded", 0, outputs=outputs, duration=duration)
        return self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, worker_id, result))
        )

    def alive(self, worker_id: str, *attempts: str) -> list[str]:
        from xwch.protocol.worker import RunningAttempt

        cancels, _ = self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.alive(
                    self.worker_token, worker_id, [RunningAttempt(a, "running") for a in attempts]
                )
            )
        )
        return cancels

    def attempts(self, job_id: str) -> list[Any]:
        with self.db.engine.begin() as conn:
            query = sa.select(schema.attempts).where(schema.attempts.c.job_id == job_id)
            return list(conn.execute(query))

    def test_one_request_gets_at_most_twice_the_workers_slots(self) -> None:
        """A worker refills its slots and the attempts it holds ahead in one request, and no
        more: asking for ten, a worker of two slots gets four."""
        self.submit(wire_job([{"id": f"t{n}"} for n in range(10)]))
        worker = self.join("lab-1", "lab", slots=2)
        self.assertEqual(WorkersManager.MOST_PER_SLOT, 2)
        self.assertEqual(len(self.work(worker, slots=10)), 4)

    # Sites

    def test_tasks_run_at_the_site_of_their_data(self) -> None:
        self.store_at(self.warehouse.id, shard(0))
        self.store_at(self.site_b.id, shard(1))
        self.submit(sharded_job(2))
        at_lab, at_b = self.join("lab-1", "lab"), self.join("b-1", "b")
        # The worker of site b asks first, and gets the task whose shard is at site b.
        self.assertEqual([a.task for a in self.work(at_b)], ["t1"])
        self.assertEqual([a.task for a in self.work(at_lab)], ["t0"])

    def test_with_fifo_the_first_asker_gets_the_first_task(self) -> None:
        # A coordinator on the same store: it knows the same warehouses.
        self.coordinator = self.build(scheduler="fifo")
        self.store_at(self.warehouse.id, shard(0))
        self.store_at(self.site_b.id, shard(1))
        self.submit(sharded_job(2))
        self.join("lab-1", "lab")
        at_b = self.join("b-1", "b")
        self.assertEqual([a.task for a in self.work(at_b)], ["t0"])

    def build(self, **settings: Any) -> Coordinator:
        config = CoordinatorConfig(db_url=self.url, alive_interval=5.0, **settings)
        return self.successResultOf(
            ensureDeferred(
                make_coordinator(config, self.clock, db=self.db, request_copy=self.copies.request)
            )
        )

    def test_the_policy_is_chosen_by_configuration(self) -> None:
        self.assertIsInstance(self.coordinator.scheduler, LocalityScheduler)
        self.assertIsInstance(self.build(scheduler="fifo").scheduler, FifoScheduler)
        config = CoordinatorConfig(db_url=self.url, scheduler="lifo")
        failure = self.failureResultOf(
            ensureDeferred(make_coordinator(config, self.clock, db=self.db)), ValueError
        )
        self.assertIn("unknown scheduling policy 'lifo'", str(failure.value))

    # Caches

    def test_a_worker_gets_the_task_whose_input_its_cache_holds(self) -> None:
        self.store_at(self.warehouse.id, shard(0), shard(1))
        plain = self.join("lab-1", "lab")
        warm = self.join("lab-2", "lab", cached=(shard(1)[:16],))
        self.submit(sharded_job(2))
        self.assertEqual([a.task for a in self.work(warm)], ["t1"])
        self.assertEqual([a.task for a in self.work(plain)], ["t0"])

    def test_a_readers_task_follows_its_producers_outputs(self) -> None:
        """The worker that made an output keeps it: the task reading it goes there."""
        self.store_at(self.warehouse.id, shard(0), shard(1))
        job = wire_job(
            [
                {"id": "make", "outputs": ["big"]},
                {"id": "other", "outputs": ["x"]},
                {"id": "read", "inputs": [{"local": "big", "task": "make", "output": "big"}]},
                {"id": "filler", "after": ["other"]},
            ]
        )
        self.submit(job)
        k1, k2 = self.join("lab-1", "lab"), self.join("lab-2", "lab")
        [make] = self.work(k1)
        [other] = self.work(k2)
        big = OutputFile("big", digest_of("big output"), 32 * MIB)
        self.store_at(self.warehouse.id, big.digest, size=big.size)
        result = AttemptResult(make.attempt, "succeeded", 0, outputs=(big,), duration=1.0)
        self.successResultOf(
            ensureDeferred(self.coordinator.workers.result(self.worker_token, k1, result))
        )
        self.succeed(k2, other)
        # k2 asks first, but "read" waits for k1, which holds its 32 MiB input.
        self.assertEqual([a.task for a in self.work(k2)], ["filler"])
        self.assertEqual([a.task for a in self.work(k1)], ["read"])

    def test_evictions_reported_in_work_alive_are_forgotten(self) -> None:
        warm = self.join("lab-1", "lab", cached=(shard(1)[:16],))
        scheduler = self.coordinator.scheduler
        assert isinstance(scheduler, LocalityScheduler)
        self.assertTrue(scheduler.caches.has(warm, shard(1)))
        self.successResultOf(
            ensureDeferred(
                self.coordinator.workers.alive(self.worker_token, warm, [], evicted=[shard(1)])
            )
        )
        self.assertFalse(scheduler.caches.has(warm, shard(1)))

    # Speed

    def test_a_big_task_goes_to_the_faster_worker(self) -> None:
        job = wire_job([{"id": "small", "cost": 1}, {"id": "big", "cost": 50}])
        self.submit(job)
        slow = self.join("slow", "lab", performance=0.5)
        fast = self.join("fast", "lab", performance=2.0)
        self.assertEqual([a.task for a in self.work(slow, performance=0.5)], ["small"])
        self.assertEqual([a.task for a in self.work(fast, performance=2.0)], ["big"])

    def test_fair_share_between_two_users_jobs(self) -> None:
        other_user = self.token("client")
        mine = self.submit(wire_job([{"id": f"m{n}"} for n in range(6)], name="mine"))
        theirs = self.successResultOf(
            ensureDeferred(
                self.coordinator.tasks.submit(
                    wire_job([{"id": f"t{n}"} for n in range(6)], name="theirs"),
                    owner=other_user.id,
                )
            )
        )
        worker = self.join("lab-1", "lab", slots=4)
        jobs = sorted(a.job for a in self.work(worker, slots=4))
        self.assertEqual(jobs, sorted([mine, mine, theirs, theirs]))

    # Stragglers

    def test_a_straggler_is_raced_and_its_result_recorded_once(self) -> None:
        job = self.submit(wire_job([{"id": "quick", "outputs": ["o"]}, {"id": "slow"}]))
        k1 = self.join("lab-1", "lab", slots=2)
        quick, slow = self.work(k1, slots=2)
        self.succeed(k1, quick, duration=1.0)
        k2 = self.join("lab-2", "lab")
        # Not slow yet: nothing to race.
        self.assertEqual(self.work(k2), [])
        self.advance(10)
        self.alive(k1, slow.attempt)
        [duplicate] = self.work(k2)
        self.assertEqual((duplicate.task, duplicate.number), ("slow", 2))
        # The scanner does not take the race for a duplicate to repair.
        self.assertEqual(
            self.successResultOf(ensureDeferred(self.coordinator.tasks.repair_duplicates())), 0
        )
        # One race per task: a third worker gets nothing.
        k3 = self.join("lab-3", "lab")
        self.assertEqual(self.work(k3), [])
        # The duplicate wins; the original is cancelled and its late result discarded.
        self.assertTrue(self.succeed(k2, duplicate))
        self.assertEqual(self.alive(k1, slow.attempt), [slow.attempt])
        self.assertFalse(self.succeed(k1, slow))
        states = {(a.task_id, a.number): a.state for a in self.attempts(job)}
        self.assertEqual(
            states,
            {("quick", 1): "succeeded", ("slow", 1): "cancelled", ("slow", 2): "succeeded"},
        )
        summary = self.successResultOf(self.db.read(job_queries.job_summary_thd, job))
        self.assertEqual((summary.state, summary.counts.get("done")), ("done", 2))

    def test_a_straggler_is_not_raced_by_slots_asked_for_ahead(self) -> None:
        """A worker whose slots are all busy, asking ahead (idle_slots 0), gets no duplicate:
        it would wait there behind the worker's own attempts."""
        self.submit(wire_job([{"id": "quick"}, {"id": "slow"}]))
        k1 = self.join("lab-1", "lab", slots=2)
        quick, slow = self.work(k1, slots=2)
        self.succeed(k1, quick, duration=1.0)
        self.advance(10)
        self.alive(k1, slow.attempt)
        k2 = self.join("lab-2", "lab", slots=2)
        self.assertEqual(self.work(k2, slots=2, idle_slots=0), [])
        [duplicate] = self.work(k2, slots=2, idle_slots=1)
        self.assertEqual((duplicate.task, duplicate.number), ("slow", 2))

    def test_an_assignment_that_never_arrived_runs_again(self) -> None:
        """A worker whose Work Alive does not list an attempt given long ago never got it."""
        job = self.submit(wire_job([{"id": "lost-on-the-way"}, {"id": "kept"}]))
        k1 = self.join("lab-1", "lab", slots=2)
        lost, kept = self.work(k1, slots=2)
        # Just given: a Work Alive sent before the answer arrived does not list it yet.
        self.alive(k1, kept.attempt)
        self.assertIn(lost.attempt, self.coordinator.tasks.attempts)
        self.advance(20)
        self.alive(k1, kept.attempt)
        self.assertNotIn(lost.attempt, self.coordinator.tasks.attempts)
        states = {(a.task_id, a.number): (a.state, a.error) for a in self.attempts(job)}
        self.assertEqual(states[("lost-on-the-way", 1)], ("lost", "its worker never received it"))
        # Ready again, no failure counted; the listed attempt is untouched.
        self.advance(1)
        [again] = self.work(k1, slots=1)
        self.assertEqual((again.task, again.number), ("lost-on-the-way", 2))
        self.assertIn(kept.attempt, self.coordinator.tasks.attempts)
        failures = self.coordinator.tasks.jobs[job].tasks["lost-on-the-way"].failures
        self.assertEqual(failures, 0)

    def test_no_race_while_tasks_still_wait(self) -> None:
        self.submit(wire_job([{"id": f"t{n}"} for n in range(3)]))
        k1 = self.join("lab-1", "lab", slots=2)
        first, _second = self.work(k1, slots=2)
        self.succeed(k1, first, duration=1.0)
        self.advance(10)
        k2 = self.join("lab-2", "lab")
        # t2 is ready: k2 runs it rather than racing anything.
        self.assertEqual([a.task for a in self.work(k2)], ["t2"])

    # Prefetch

    def test_a_blocked_tasks_inputs_travel_to_where_it_will_run(self) -> None:
        """A reduce waiting for maps at two sites gets their outputs copied to the busier one."""
        self.store_at(self.warehouse.id, shard(0), shard(1))
        self.store_at(self.site_b.id, shard(2))
        job = sharded_job(3)
        job["tasks"].append(
            {
                **job["tasks"][0],
                "id": "reduce",
                "inputs": [{"local": f"in{n}", "task": f"t{n}", "output": "out"} for n in range(3)],
            }
        )
        self.submit(job)
        at_lab, at_b = self.join("lab-1", "lab", slots=2), self.join("b-1", "b")
        lab_tasks = self.work(at_lab, slots=2)
        [b_task] = self.work(at_b)
        self.assertEqual(sorted(a.task for a in lab_tasks), ["t0", "t1"])
        self.assertEqual(b_task.task, "t2")
        # Outputs of 1 MiB each, stored at their worker's site.
        for worker, a, where in [
            (at_lab, lab_tasks[0], self.warehouse.id),
            (at_lab, lab_tasks[1], self.warehouse.id),
            (at_b, b_task, self.site_b.id),
        ]:
            out = OutputFile("out", digest_of(a.task + "out"), MIB)
            self.store_at(where, out.digest, size=MIB)
            result = AttemptResult(a.attempt, "succeeded", 0, outputs=(out,), duration=1.0)
            self.successResultOf(
                ensureDeferred(self.coordinator.workers.result(self.worker_token, worker, result))
            )
        # t2's output went to the lab's warehouse, where most of the reduce's bytes are.
        self.assertIn(("http://127.0.0.1:9", digest_of("t2out")), self.copies.requests)
        self.assertNotIn(("http://127.0.0.1:10", digest_of("t0out")), self.copies.requests)


def test_the_command_line_refuses_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        coordinator_main(["--scheduler", "lifo"])
    assert exit.value.code == 2
    assert "--scheduler" in capsys.readouterr().err
