"""Fencing: every change of tasks and attempts is conditioned on the group lock it was made
under; a member that lost the lock without knowing it has its changes refused, whole."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import CoordinatorTestCase, diamond, wire_job
from xwch.store import jobs as job_queries
from xwch.store.group_locks import Fence, Fences, NotHeld, claim_thd, ensure_groups_thd
from xwch.store.schema import attempts, group_locks, jobs

LEASE = 10.0


class FencingTests(CoordinatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        now = self.clock.seconds()
        with self.db.engine.begin() as conn:
            ensure_groups_thd(conn, ["g1"])
            epoch = claim_thd(conn, "g1", "c-me", LEASE, now)
        assert epoch is not None
        self.refusals: list[NotHeld] = []
        tasks = self.coordinator.tasks
        tasks.fence = Fence("g1", "c-me", epoch)
        tasks.on_fenced.append(self.refusals.append)

    def lose_the_group(self) -> None:
        """Another member took the group while this one was paused past its lease."""
        with self.db.engine.begin() as conn:
            conn.execute(group_locks.update().values(expires=0.0))
            assert claim_thd(conn, "g1", "c-other", LEASE, self.clock.seconds()) == 2

    def count(self, table: object) -> int:
        with self.db.engine.begin() as conn:
            return len(conn.execute(table.select()).all())  # type: ignore[attr-defined]

    def test_a_holder_at_its_epoch_changes_what_it_holds(self) -> None:
        job = self.submit(diamond())
        worker = self.register()
        work = self.successResultOf(
            ensureDeferred(self.coordinator.workers.work_request(self.worker_token, worker, 1.0, 2))
        )
        self.assertEqual([a.task for a in work], ["a"])
        self.assertEqual(self.count(attempts), 1)
        self.assertEqual(self.refusals, [])
        self.assertIsNotNone(self.successResultOf(self.db.read(job_queries.job_summary_thd, job)))

    def test_a_stale_holders_new_job_is_refused_and_nothing_is_stored(self) -> None:
        self.lose_the_group()
        d = ensureDeferred(self.coordinator.tasks.submit(diamond(), owner=self.client.id))
        self.failureResultOf(d, NotHeld)
        self.assertEqual(self.count(jobs), 0)
        self.assertEqual(len(self.refusals), 1)

    def test_a_stale_holder_hands_out_no_attempt(self) -> None:
        self.submit(wire_job([{"id": "only"}]))
        worker = self.register()
        self.lose_the_group()
        d = ensureDeferred(self.coordinator.workers.work_request(self.worker_token, worker, 1.0, 2))
        self.failureResultOf(d, NotHeld)
        # The attempt it decided on never reached the store: nobody may run it.
        self.assertEqual(self.count(attempts), 0)
        self.assertEqual(len(self.refusals), 1)


class SeveralGroupsFencingTests(CoordinatorTestCase):
    """A member holding two groups changes nothing once it lost either of them."""

    def setUp(self) -> None:
        super().setUp()
        now = self.clock.seconds()
        with self.db.engine.begin() as conn:
            ensure_groups_thd(conn, ["g1", "g2"])
            held = {g: claim_thd(conn, g, "c-me", LEASE, now) for g in ("g1", "g2")}
        self.refusals: list[NotHeld] = []
        tasks = self.coordinator.tasks
        tasks.fence = Fences.of("c-me", {g: e for g, e in held.items() if e is not None})
        tasks.on_fenced.append(self.refusals.append)

    def test_losing_one_of_two_groups_refuses_every_change(self) -> None:
        self.submit(wire_job([{"id": "only"}]))
        worker = self.register()
        with self.db.engine.begin() as conn:
            conn.execute(group_locks.update().where(group_locks.c.id == "g2").values(expires=0.0))
            assert claim_thd(conn, "g2", "c-other", LEASE, self.clock.seconds()) == 2
        d = ensureDeferred(self.coordinator.workers.work_request(self.worker_token, worker, 1.0, 2))
        self.failureResultOf(d, NotHeld)
        with self.db.engine.begin() as conn:
            self.assertEqual(conn.execute(attempts.select()).all(), [])
        self.assertEqual(len(self.refusals), 1)
