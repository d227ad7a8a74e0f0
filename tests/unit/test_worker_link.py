"""The coordinator link on its own: one method per message, re-registering when forgotten."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator import FakeCoordinator, WorkRequest
from tests.unit.test_worker_service import FACTS, TOP_OF_EACH_STEP, FakePacer, assignment
from xwch.protocol.wire import OUTCOME_FAILED
from xwch.protocol.worker import AttemptResult
from xwch.worker.last_registration import LastRegistration
from xwch.worker.link import CoordinatorLink, WorkAsk, WorkerLost


class CoordinatorLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator(alive_interval=10.0)
        self.lost: list[str | None] = []
        self.intervals: list[float] = []
        self.link = CoordinatorLink(
            self.clock,
            self.coordinator.api(),
            FACTS,
            FakePacer(),
            TOP_OF_EACH_STEP,
            on_registered=self.intervals.append,
            on_lost=lambda: self.lost.append(self.link.worker_id),
        )
        self.successResultOf(Deferred.fromCoroutine(self.link.register()))

    def test_registering_tells_the_work_alive_period(self) -> None:
        self.assertEqual(self.link.worker_id, "w1")
        self.assertEqual(self.intervals, [10.0])
        self.assertEqual(self.successResultOf(self.link.when_registered()), "w1")

    def test_a_work_request_says_what_it_asks_for(self) -> None:
        self.coordinator.assign(assignment("a1"))
        ask = WorkAsk(slots=2, idle=1, wait=20.0)
        tasks = self.successResultOf(Deferred.fromCoroutine(self.link.request_work(ask)))
        self.assertEqual([t.attempt for t in tasks], ["a1"])
        self.assertEqual(self.coordinator.work_requests, [WorkRequest("w1", 1.5, 2)])
        self.assertEqual((self.coordinator.idle_slots, self.coordinator.waits), ([1], [20.0]))

    def test_a_forgotten_worker_is_told_and_its_results_wait_for_the_new_id(self) -> None:
        """A Work Request answered 404 unknown_worker raises WorkerLost; a result sent
        meanwhile goes once the worker has registered again, under its new id."""
        self.coordinator.declare_lost("w1")
        d = Deferred.fromCoroutine(self.link.request_work(WorkAsk(1, 1)))
        self.failureResultOf(d, WorkerLost)
        self.assertEqual((self.link.lost, self.lost), (True, ["w1"]))
        self.coordinator.assigned["a1"] = "w2"
        result = AttemptResult("a1", OUTCOME_FAILED, error="exited with status 1")
        sent = Deferred.fromCoroutine(self.link.send_results([result], None))
        self.assertNoResult(sent)
        self.successResultOf(Deferred.fromCoroutine(self.link.register()))
        answer = self.successResultOf(sent)
        self.assertEqual([v.accepted for v in answer.verdicts], [True])
        self.assertEqual([w for w, _ in self.coordinator.results], ["w2"])


class LastRegistrationTests(SynchronousTestCase):
    """A worker started again names the registration of its previous run, kept in its data
    folder, so the coordinator hands that run's attempts on at once."""

    def link(self, last: LastRegistration, coordinator: FakeCoordinator) -> CoordinatorLink:
        return CoordinatorLink(
            Clock(), coordinator.api(), FACTS, FakePacer(), TOP_OF_EACH_STEP, last=last
        )

    def test_a_restarted_worker_names_its_previous_registration(self) -> None:
        last = LastRegistration(Path(self.mktemp()))
        coordinator = FakeCoordinator()
        first = self.link(last, coordinator)
        self.successResultOf(Deferred.fromCoroutine(first.register()))
        self.assertIsNone(coordinator.registrations[0].replaces)
        self.assertEqual(last.read(), first.worker_id)
        # The process dies; the next one reads the id its predecessor kept.
        again = self.link(LastRegistration(last.path), coordinator)
        self.successResultOf(Deferred.fromCoroutine(again.register()))
        self.assertEqual(coordinator.registrations[1].replaces, first.worker_id)
        self.assertEqual(last.read(), again.worker_id)

    def test_a_worker_registering_again_names_its_lost_id(self) -> None:
        coordinator = FakeCoordinator()
        link = self.link(LastRegistration(Path(self.mktemp())), coordinator)
        self.successResultOf(Deferred.fromCoroutine(link.register()))
        coordinator.declare_lost("w1")
        self.failureResultOf(Deferred.fromCoroutine(link.request_work(WorkAsk(1, 1))), WorkerLost)
        self.successResultOf(Deferred.fromCoroutine(link.register()))
        self.assertEqual(coordinator.registrations[-1].replaces, "w1")

    def test_a_missing_or_garbled_file_names_nothing(self) -> None:
        path = Path(self.mktemp())
        self.assertIsNone(LastRegistration(path).read())
        for garbage in ("", "two words", "x" * 65, "\x00\x01", "\n"):
            path.write_text(garbage)
            self.assertIsNone(LastRegistration(path).read(), repr(garbage))
        path.write_bytes(b"\xff\xfe")
        self.assertIsNone(LastRegistration(path).read())

    def test_a_folder_that_cannot_be_written_costs_nothing(self) -> None:
        last = LastRegistration(Path(self.mktemp()) / "missing-folder" / "last-registration")
        coordinator = FakeCoordinator()
        link = self.link(last, coordinator)
        self.successResultOf(Deferred.fromCoroutine(link.register()))
        self.assertEqual(link.worker_id, "w1")
        self.assertIsNone(last.read())
