"""The worker's conversation with the coordinator, on a Clock, with fake attempts and uploads."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from msgspec.structs import replace
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator import WAREHOUSE_URL, FakeCoordinator, WorkRequest
from xwch.errors import Unreachable
from xwch.protocol.objects import BinaryRef, OutputFile, Source
from xwch.protocol.wire import OUTCOME_FAILED, OUTCOME_SUCCEEDED, PROTOCOL_VERSION
from xwch.protocol.worker import Assignment, AttemptResult, HostFacts, Policy
from xwch.retry import equal_jitter
from xwch.worker.executor import CompletedAttempt
from xwch.worker.link import CoordinatorLink, RegistrationRefused
from xwch.worker.reporter import ResultReporter
from xwch.worker.service import WorkerService
from xwch.worker.sites import nearest_site
from xwch.worker.uploader import OutputUploader

FACTS = HostFacts(
    name="volunteer",
    address="192.0.2.7",
    platform="linux-x86_64",
    cores=4,
    memory=8 << 30,
    slots=2,
    performance=1.5,
    protocol=PROTOCOL_VERSION,
)
BINARY = BinaryRef(digest="b" * 64, size=10)
# The upper end of every backoff step: delays the tests can name.
TOP_OF_EACH_STEP = equal_jitter(CoordinatorLink.RETRY_BASE, CoordinatorLink.RETRY_CAP, lambda: 1.0)


def assignment(attempt: str, task: str = "t") -> Assignment:
    return Assignment(
        attempt=attempt,
        job="j1",
        task=task,
        number=1,
        binary=BINARY,
        args=(),
        env={},
        inputs=(),
        outputs=("out.txt",),
        timeout=None,
    )


class FakeAttempt:
    """An attempt whose end the test decides."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.killed = False
        self.discarded = False
        self.suspended = False
        self._end: Deferred[CompletedAttempt] = Deferred()

    async def run(self) -> CompletedAttempt:
        return await self._end

    def succeed(self, output: bytes = b"tile", inline: bool = False) -> OutputFile:
        digest = hashlib.sha256(output).hexdigest()
        content = output if inline else None
        out = OutputFile(name="out.txt", digest=digest, size=len(output), content=content)
        result = AttemptResult(
            self.assignment.attempt, OUTCOME_SUCCEEDED, exit_code=0, outputs=(out,), stdout="ok\n"
        )
        self._end.callback(CompletedAttempt(result, {digest: Path("/cache") / digest}))
        return out

    def fail(self, exit_code: int = 3, stderr: str = "boom\n") -> None:
        result = AttemptResult(
            self.assignment.attempt,
            OUTCOME_FAILED,
            exit_code=exit_code,
            error=f"exited with status {exit_code}",
            stderr=stderr,
        )
        self._end.callback(CompletedAttempt(result, {}))

    def kill(self) -> None:
        self.killed = True
        if not self._end.called:
            result = AttemptResult(self.assignment.attempt, OUTCOME_FAILED, error="killed")
            self._end.callback(CompletedAttempt(result, {}))

    def discard(self) -> Deferred[None]:
        self.discarded = True
        return succeed(None)

    def suspend(self) -> None:
        self.suspended = True

    def resume(self) -> None:
        self.suspended = False


class FakeEvictions:
    """Digests the cache evicted, waiting for the next Work Alive."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def take_evicted(self) -> list[str]:
        taken, self.pending = self.pending, []
        return taken

    def restore_evicted(self, digests: list[str]) -> None:
        self.pending[:0] = digests


class FakePacer:
    def __init__(self) -> None:
        self.policies: list[Policy] = []

    def update(self, policy: Policy) -> None:
        self.policies.append(policy)


class ServiceHarness(SynchronousTestCase):
    """A worker service against a fake coordinator, on a Clock."""

    # Real workers work ahead on short attempts; most tests look at one attempt at a time.
    work_ahead = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator(alive_interval=10.0)
        self.attempts: dict[str, FakeAttempt] = {}
        self.uploads: list[tuple[str, str, int, Path, str]] = []
        self.pacer = FakePacer()
        self.evictions = FakeEvictions()
        self.service = self.make_service()

    def make_service(self, token: str | None = None) -> WorkerService:
        return WorkerService(
            self.clock,
            self.coordinator.api(token),
            FACTS,
            self.new_attempt,
            self.store_object,
            self.pacer,
            retry_policy=TOP_OF_EACH_STEP,
            evictions=self.evictions,
            work_ahead=self.work_ahead,
        )

    def new_attempt(self, assignment: Assignment) -> FakeAttempt:
        if assignment.attempt == "..":
            raise ValueError("not an attempt id")
        attempt = self.attempts[assignment.attempt] = FakeAttempt(assignment)
        return attempt

    async def store_object(self, url: str, digest: str, size: int, path: Path, cap: str) -> None:
        self.uploads.append((url, digest, size, path, cap))
        self.coordinator.stored.add(digest)

    def start(self) -> None:
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.service.running:
            d = self.service.stopService()
            self.clock.advance(WorkerService.GIVEBACK_TIMEOUT)
            self.successResultOf(d)


class WorkerServiceTests(ServiceHarness):
    def test_registers_then_asks_for_work_with_its_free_slots(self) -> None:
        """A started worker registers its host facts, then asks for as many tasks as slots."""
        self.start()
        self.assertEqual(self.coordinator.registrations, [FACTS])
        self.assertEqual(self.successResultOf(self.service.when_registered()), "w1")
        self.assertEqual(self.coordinator.work_requests, [WorkRequest("w1", 1.5, 2)])
        self.assertEqual(self.coordinator.routes()[:2], ["register", "work"])

    def test_runs_assignments_and_reports_results_with_outputs_stored(self) -> None:
        """An attempt that succeeds has its output uploaded with its capability, then reported."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.assertEqual(self.service.running_attempts(), ["a1"])
        # One task for two slots: it asks again at once for the other slot.
        self.assertEqual(
            self.coordinator.work_requests, [WorkRequest("w1", 1.5, 2), WorkRequest("w1", 1.5, 1)]
        )
        requests = len(self.coordinator.work_requests)
        output = self.attempts["a1"].succeed()
        self.assertEqual(
            self.uploads,
            [
                (
                    WAREHOUSE_URL,
                    output.digest,
                    output.size,
                    Path("/cache") / output.digest,
                    f"put:{output.digest}",
                )
            ],
        )
        [(worker, result)] = self.coordinator.results
        self.assertEqual((worker, result.attempt, result.outcome), ("w1", "a1", OUTCOME_SUCCEEDED))
        self.assertEqual(result.outputs, (output,))
        routes = self.coordinator.routes()
        # Then, given no work with the result, a Work Request that may wait for some.
        self.assertEqual(routes[routes.index("uploads") :], ["uploads", "results", "work"])
        # The result asked for more work at once, with the slot free again.
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 2)])
        self.assertEqual(len(self.coordinator.work_requests), requests + 1)
        self.assertTrue(self.attempts["a1"].discarded)
        self.assertEqual(self.service.running_attempts(), [])

    def test_outputs_already_stored_are_not_uploaded_again(self) -> None:
        """An output some warehouse already holds is not sent again."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.stored.add(hashlib.sha256(b"tile").hexdigest())
        self.attempts["a1"].succeed(b"tile")
        self.assertEqual(self.uploads, [])
        self.assertEqual(len(self.coordinator.results), 1)

    def test_small_outputs_go_straight_to_the_assignments_upload_target(self) -> None:
        """With an upload target in its assignment, a small output is stored there, with the
        target's capability, and no uploads plan is asked for."""
        target = Source(url="http://wh-near:1", capability="put:any")
        self.coordinator.assign(replace(assignment("a1"), upload=target))
        self.start()
        output = self.attempts["a1"].succeed()
        self.assertEqual(
            self.uploads,
            [
                (
                    "http://wh-near:1",
                    output.digest,
                    output.size,
                    Path("/cache") / output.digest,
                    "put:any",
                )
            ],
        )
        self.assertNotIn("uploads", self.coordinator.routes())
        [(_worker, result)] = self.coordinator.results
        self.assertEqual(result.outputs, (output,))

    def test_an_output_carried_inline_is_stored_nowhere(self) -> None:
        """An output the executor read whole (small) goes in the result, not to a warehouse."""
        target = Source(url="http://wh-near:1", capability="put:any")
        self.coordinator.assign(replace(assignment("a1"), upload=target))
        self.start()
        output = self.attempts["a1"].succeed(b"42\n", inline=True)
        self.assertEqual(self.uploads, [])
        self.assertNotIn("uploads", self.coordinator.routes())
        [(_worker, result)] = self.coordinator.results
        self.assertEqual(result.outputs, (output,))
        self.assertEqual(result.outputs[0].content, b"42\n")

    def test_a_big_output_goes_by_an_uploads_plan_even_with_a_target(self) -> None:
        """Beyond DIRECT_UPLOAD_MOST the plan is asked for: it skips what a warehouse holds."""
        target = Source(url="http://wh-near:1", capability="put:any")
        self.coordinator.assign(replace(assignment("a1"), upload=target))
        self.start()
        big = b"x" * (OutputUploader.DIRECT_UPLOAD_MOST + 1)
        output = self.attempts["a1"].succeed(big)
        self.assertIn("uploads", self.coordinator.routes())
        self.assertEqual([u[0] for u in self.uploads], [WAREHOUSE_URL])
        self.assertEqual(self.uploads[0][4], f"put:{output.digest}")

    def test_a_failed_direct_upload_falls_back_to_an_uploads_plan(self) -> None:
        """The target refusing (gone, or its capability expired): the plan's warehouse is used."""
        target = Source(url="http://wh-gone:1", capability="put:any")
        refused: list[str] = []

        async def store_object(url: str, digest: str, size: int, path: Path, cap: str) -> None:
            if url == "http://wh-gone:1":
                refused.append(digest)
                raise Unreachable("connection refused")
            await self.store_object(url, digest, size, path, cap)

        self.service = WorkerService(
            self.clock,
            self.coordinator.api(None),
            FACTS,
            self.new_attempt,
            store_object,
            self.pacer,
            retry_policy=TOP_OF_EACH_STEP,
            evictions=self.evictions,
        )
        self.coordinator.assign(replace(assignment("a1"), upload=target))
        self.start()
        output = self.attempts["a1"].succeed()
        self.assertEqual(refused, [output.digest])
        self.assertEqual([u[0] for u in self.uploads], [WAREHOUSE_URL])
        [(_worker, result)] = self.coordinator.results
        self.assertEqual(result.outcome, OUTCOME_SUCCEEDED)

    def test_failed_attempt_is_reported_with_its_logs(self) -> None:
        """A task that fails is reported with exit code and stderr, with nothing uploaded."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.attempts["a1"].fail(exit_code=3, stderr="no palette\n")
        [(_, result)] = self.coordinator.results
        self.assertEqual((result.outcome, result.exit_code), (OUTCOME_FAILED, 3))
        self.assertEqual(result.stderr, "no palette\n")
        self.assertEqual(self.coordinator.upload_plans, [])

    def test_assignment_that_cannot_start_is_reported_failed(self) -> None:
        """An assignment the worker cannot set up is reported failed, so it runs elsewhere."""
        self.coordinator.assign(assignment(".."))
        self.start()
        [(_, result)] = self.coordinator.results
        self.assertEqual((result.attempt, result.outcome), ("..", OUTCOME_FAILED))
        self.assertIn("not an attempt id", result.error or "")
        self.assertEqual(self.service.running_attempts(), [])
        self.flushLoggedErrors(ValueError)

    def test_full_worker_does_not_ask_for_work(self) -> None:
        """With every slot busy the worker sends no Work Request until a slot frees."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        self.assertEqual(len(self.coordinator.work_requests), 1)
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 10)
        self.assertEqual(len(self.coordinator.work_requests), 1)
        self.attempts["a2"].fail()
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 1)])

    def test_work_result_brings_the_next_tasks_without_a_work_request(self) -> None:
        """A result asks for work for the slot it frees; the tasks of its answer run at once."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        requests = len(self.coordinator.work_requests)
        self.coordinator.assign(assignment("a3"))
        self.attempts["a1"].succeed()
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 1)])
        self.assertEqual(sorted(self.service.running_attempts()), ["a2", "a3"])
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 10)
        # Full again: no Work Request was needed.
        self.assertEqual(len(self.coordinator.work_requests), requests)
        self.assertNotIn(
            "work", self.coordinator.routes()[self.coordinator.routes().index("results") :]
        )

    def test_a_result_answered_without_tasks_is_followed_by_a_work_request(self) -> None:
        """A result answered without tasks (the coordinator too busy to assign then) is followed
        by a Work Request for the slot."""
        self.coordinator.work_in_results = False
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        self.coordinator.assign(assignment("a3"))
        self.attempts["a1"].succeed()
        routes = self.coordinator.routes()
        self.assertEqual(routes[routes.index("results") :], ["results", "work"])
        self.assertEqual(self.coordinator.work_requests[-1], WorkRequest("w1", 1.5, 1))
        self.assertEqual(sorted(self.service.running_attempts()), ["a2", "a3"])

    def test_result_answered_without_work_is_followed_by_a_waiting_request(self) -> None:
        """No task in a result's answer: the worker sends a Work Request that may wait for
        work; answered at once with none (a coordinator that does not hold requests), it polls
        again after the idle period, not at once."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        requests = len(self.coordinator.work_requests)
        self.attempts["a1"].fail()
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 2)])
        self.assertEqual(len(self.coordinator.work_requests), requests + 1)
        self.assertEqual(self.coordinator.waits[-1], WorkerService.WORK_WAIT)
        self.coordinator.assign(assignment("a2"))
        self.assertEqual(len(self.coordinator.work_requests), requests + 1)
        self.clock.advance(WorkerService.IDLE_POLL_MAX)
        self.assertGreater(len(self.coordinator.work_requests), requests + 1)
        self.assertEqual(self.service.running_attempts(), ["a2"])

    def test_an_idle_worker_waits_for_work_at_the_coordinator(self) -> None:
        """With nothing to do, one Work Request waits at the coordinator (no polling), and
        the work it gets starts the moment the coordinator has some."""
        self.coordinator.holds_work = True
        self.start()
        self.assertEqual(self.coordinator.waits, [WorkerService.WORK_WAIT])
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 5)
        self.assertEqual(len(self.coordinator.work_requests), 1)
        self.coordinator.assign(assignment("a1"))
        self.assertEqual(self.service.running_attempts(), ["a1"])
        self.assertEqual(len(self.coordinator.work_requests), 2)  # the other slot's

    def test_a_request_that_waited_its_time_is_followed_at_once(self) -> None:
        """A Work Request answered with nothing after waiting at the coordinator is followed by
        the next at once: the waiting was the poll's period."""
        self.coordinator.holds_work = True
        self.start()
        self.clock.advance(WorkerService.WORK_WAIT)
        self.coordinator.release_held()
        self.assertEqual(len(self.coordinator.work_requests), 2)
        self.assertEqual(len(self.coordinator.held), 1)

    def test_successes_beyond_ten_a_minute_are_told_in_one_line(self) -> None:
        """Each success has its line up to SUCCESSES_TOLD a period; the rest are counted and
        told in one line at the period's end. Failures always have their own."""
        told = ResultReporter.SUCCESSES_TOLD
        names = [f"a{n}" for n in range(told + 3)]
        self.coordinator.assign(*(assignment(name, task=f"t{name}") for name in names))
        self.coordinator.assign(assignment("bad", task="tbad"))
        with capturedLogs() as events:
            self.start()
            while any(
                name in self.attempts and not self.attempts[name].discarded for name in names
            ):
                for name in list(self.service.running_attempts()):
                    if name in names:
                        self.attempts[name].succeed()
            self.attempts["bad"].fail()
            lines = [e for e in events if e.get("log_namespace", "").endswith("ResultReporter")]
            each = [e for e in lines if "outcome" in e]
            self.assertEqual([e["outcome"] for e in each], ["succeeded"] * told + ["failed"])
            self.clock.advance(ResultReporter.SUCCESS_PERIOD)
        [summary] = [
            e for e in events if "count" in e and "more attempts succeeded" in e["log_format"]
        ]
        self.assertEqual(summary["count"], 3)

    def test_stopping_calls_off_a_request_waiting_for_work_quietly(self) -> None:
        """A worker stopped while its Work Request waits for work stops at once, and does not
        log the called-off request as a failed one."""
        self.coordinator.holds_work = True
        self.start()
        with capturedLogs() as events:
            self.stop()
        self.assertFalse(self.service.running)
        self.assertEqual([e["log_format"] for e in events if e["log_level"] == LogLevel.warn], [])

    def test_suspending_calls_off_a_request_waiting_for_work(self) -> None:
        """A suspended worker must not get work: its waiting Work Request is called off
        (quietly: that is no failure to retry), and it asks again once resumed."""
        self.coordinator.holds_work = True
        self.start()
        self.service.suspend("the owner is using the machine")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 5)
        self.assertEqual(len(self.coordinator.work_requests), 1)
        self.coordinator.held.clear()  # the line dropped: the coordinator lets go of it
        self.service.resume()
        self.assertEqual(len(self.coordinator.work_requests), 2)
        self.coordinator.assign(assignment("a1"))
        self.assertEqual(self.service.running_attempts(), ["a1"])

    def test_work_asked_by_a_result_is_not_asked_again_meanwhile(self) -> None:
        """While a result's request for work is unanswered, its slots are not asked for twice."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        # The result's answer is held up: the coordinator is down, then busy.
        self.coordinator.reachable = False
        self.attempts["a1"].fail()
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 4)
        requests = list(self.coordinator.work_requests)
        self.coordinator.reachable = True
        self.coordinator.assign(*(assignment(f"b{n}") for n in range(4)))
        self.clock.advance(CoordinatorLink.RETRY_CAP)
        # Every slot asked for once: two attempts for two slots, never more.
        self.assertEqual(len(self.service.running_attempts()), 2)
        self.assertEqual(self.coordinator.work_requests, requests)

    def test_cancel_racing_a_result_on_its_way_does_not_lose_its_answer(self) -> None:
        """A Work Alive's cancel for an attempt whose result is being sent (the coordinator took
        the result just before) lets the result's answer, and the tasks it carries, arrive."""
        self.service.set_slots(1)
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.fail_next("results", 503, "busy", retry_after=15.0)
        self.attempts["a1"].fail()
        self.coordinator.cancel("a1")
        self.coordinator.assign(assignment("a2"))
        self.clock.advance(10.0)
        self.assertEqual(self.coordinator.alives, [("w1", ["a1"])])
        self.assertEqual(self.coordinator.results, [])
        self.clock.advance(5.0)
        self.assertEqual([r.attempt for _, r in self.coordinator.results], ["a1"])
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 1)])
        self.assertEqual(self.service.running_attempts(), ["a2"])

    def _three_slots_with_results_held(self) -> None:
        """Three attempts (outputs stored straight at a warehouse) whose results all end while
        the coordinator cannot be reached: a1's is on its way, a2's and a3's wait for it."""
        self.service = WorkerService(
            self.clock,
            self.coordinator.api(None),
            replace(FACTS, slots=3),
            self.new_attempt,
            self.store_object,
            self.pacer,
            retry_policy=TOP_OF_EACH_STEP,
            evictions=self.evictions,
        )
        target = Source(url="http://wh-near:1", capability="put:any")
        self.coordinator.assign(
            *(replace(assignment(f"a{n}", f"t{n}"), upload=target) for n in (1, 2, 3))
        )
        self.start()
        self.coordinator.reachable = False
        for n in (1, 2, 3):
            self.attempts[f"a{n}"].succeed(f"tile {n}".encode())
        self.assertEqual(self.coordinator.results, [])

    def _until_reported(self) -> None:
        self.coordinator.reachable = True
        for _ in range(20):
            self.clock.advance(5.0)

    def test_results_ended_while_one_is_on_its_way_go_together(self) -> None:
        """Results that end while another is being sent go in one request, which asks work for
        the slots they free."""
        self._three_slots_with_results_held()
        self._until_reported()
        self.assertEqual([r.attempt for _, r in self.coordinator.results], ["a1", "a2", "a3"])
        # The first went as a batch of one: a batch's work is assigned in its results' commit.
        self.assertEqual(self.coordinator.result_batches, [1, 2])
        self.assertEqual(self.coordinator.result_work_requests[1], WorkRequest("w1", 1.5, 3))
        self.assertEqual(self.service.running_attempts(), [])

    def test_a_result_refused_in_a_batch_does_not_sink_the_others(self) -> None:
        """The coordinator refuses one result of a batch (its attempt went elsewhere): the
        others are taken, and the refused one is not sent again."""
        self._three_slots_with_results_held()
        del self.coordinator.assigned["a2"]
        self._until_reported()
        self.assertEqual([r.attempt for _, r in self.coordinator.results], ["a1", "a3"])
        self.assertEqual(self.coordinator.result_batches, [1, 2])
        self.assertEqual(self.service.running_attempts(), [])

    def test_a_refused_result_is_no_reason_to_stop(self) -> None:
        """A result the coordinator refuses (400: malformed, say) is told in the log, and the
        next results still go."""
        self.coordinator.assign(assignment("a1"), assignment("a2", "t2"), assignment("a3", "t3"))
        self.start()
        self.attempts["a1"].fail()
        self.assertEqual(self.coordinator.result_batches, [1])
        self.coordinator.fail_next("results", 400, "bad_request")
        self.attempts["a2"].fail()
        self.attempts["a3"].fail()
        self.assertEqual([r.attempt for _, r in self.coordinator.results], ["a1", "a3"])
        self.assertEqual(self.coordinator.result_batches, [1, 1])

    def test_suspended_worker_reports_without_asking_for_work(self) -> None:
        """A result reported while suspended asks for no work."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.service.suspend("the computer is in use")
        self.attempts["a1"].fail()
        self.assertEqual(len(self.coordinator.results), 1)
        self.assertEqual(self.coordinator.result_work_requests, [])

    def test_backs_off_when_there_is_no_work(self) -> None:
        """An idle worker polls at 0.2 s, then less and less often, at most every 2 s."""
        self.start()
        times = [0.0]
        seen = len(self.coordinator.work_requests)
        # Steps of 1/64 s add up exactly in binary floating point.
        for _ in range(12 * 64):
            self.clock.advance(1 / 64)
            if len(self.coordinator.work_requests) > seen:
                seen = len(self.coordinator.work_requests)
                times.append(round(self.clock.seconds(), 1))
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
        self.assertEqual(gaps[:6], [0.2, 0.4, 0.8, 1.6, 2.0, 2.0])

    def test_work_resets_the_idle_backoff(self) -> None:
        """After receiving work an idle worker polls quickly again."""
        self.start()
        self.clock.advance(0.2 + 0.4 + 0.8 + 1.6)
        self.coordinator.assign(assignment("a1"))
        self.clock.advance(2.0)
        self.assertEqual(self.service.running_attempts(), ["a1"])
        before = len(self.coordinator.work_requests)
        self.clock.advance(WorkerService.IDLE_POLL_START)
        self.assertEqual(len(self.coordinator.work_requests), before + 1)

    def test_work_alive_every_interval_lists_running_attempts(self) -> None:
        """Every alive_interval the worker tells the coordinator which attempts it runs."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.clock.advance(9.9)
        self.assertEqual(self.coordinator.alives, [])
        self.clock.advance(0.1)
        self.assertEqual(self.coordinator.alives, [("w1", ["a1"])])
        self.attempts["a1"].fail()
        self.clock.advance(10.0)
        self.assertEqual(self.coordinator.alives, [("w1", ["a1"]), ("w1", [])])

    def test_cancel_in_work_alive_kills_without_reporting(self) -> None:
        """An attempt the coordinator cancels is killed, not reported, and its slot reused."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.cancel("a1")
        self.clock.advance(10.0)
        self.assertTrue(self.attempts["a1"].killed)
        self.assertTrue(self.attempts["a1"].discarded)
        self.assertEqual(self.coordinator.results, [])
        self.assertEqual(self.service.running_attempts(), [])
        self.assertEqual(self.coordinator.work_requests[-1].free_slots, 2)

    def test_results_wait_for_an_unreachable_coordinator(self) -> None:
        """A result is kept and retried while the coordinator is down, then sent once."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.reachable = False
        self.attempts["a1"].fail()
        self.clock.advance(CoordinatorLink.RETRY_CAP * 4)
        self.assertEqual(self.coordinator.results, [])
        self.assertEqual(self.service.running_attempts(), ["a1"])
        self.coordinator.reachable = True
        self.clock.advance(CoordinatorLink.RETRY_CAP)
        self.assertEqual([r.attempt for _, r in self.coordinator.results], ["a1"])
        self.clock.advance(CoordinatorLink.RETRY_CAP * 4)
        self.assertEqual(len(self.coordinator.results), 1)

    def test_busy_coordinator_is_retried_after_its_retry_after(self) -> None:
        """A 503 busy answer to a result is retried no sooner than its Retry-After."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.fail_next("results", 503, "busy", retry_after=5.0)
        self.attempts["a1"].fail()
        self.clock.advance(4.9)
        self.assertEqual(self.coordinator.results, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.coordinator.results), 1)

    def test_registration_is_retried_until_the_coordinator_answers(self) -> None:
        """A worker started before its coordinator keeps trying, backing off, and registers."""
        self.coordinator.reachable = False
        self.start()
        registered = self.service.when_registered()
        self.clock.advance(CoordinatorLink.RETRY_CAP * 3)
        self.assertNoResult(registered)
        self.coordinator.reachable = True
        self.clock.advance(CoordinatorLink.RETRY_CAP)
        self.assertEqual(self.successResultOf(registered), "w1")
        self.assertEqual(len(self.coordinator.registrations), 1)

    def test_refused_credentials_fail_registration(self) -> None:
        """A worker whose token the coordinator refuses says so instead of retrying forever."""
        self.service = self.make_service(token="wrong")
        self.start()
        failure = self.failureResultOf(self.service.when_registered(), RegistrationRefused)
        self.assertIn("unauthorized", str(failure.value))
        self.assertEqual(self.coordinator.work_requests, [])

    def test_lost_worker_registers_again_and_drops_stale_attempts(self) -> None:
        """A worker the coordinator declared lost registers anew; attempts it cancels are dropped."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.declare_lost("w1")
        self.clock.advance(10.0)
        self.assertEqual(len(self.coordinator.registrations), 2)
        self.assertEqual(self.service.worker_id, "w2")
        self.assertEqual(self.coordinator.work_requests[-1].worker, "w2")
        # The attempt was the old worker's: the next Work Alive as w2 gets it cancelled.
        self.clock.advance(10.0)
        self.assertTrue(self.attempts["a1"].killed)
        self.assertEqual(self.coordinator.results, [])

    def test_result_after_being_lost_goes_to_the_new_registration(self) -> None:
        """A result sent while lost waits for the new registration, then goes under the new id."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.declare_lost("w1")
        # The coordinator kept the attempt (say it was re-assigned to the same machine).
        self.coordinator.assigned["a1"] = "w2"
        self.attempts["a1"].fail()
        self.assertEqual([w for w, _ in self.coordinator.results], ["w2"])
        # The batch refused as unknown_worker (404) was not taken for a coordinator that
        # refuses batches: the next result still goes as one.
        self.assertEqual(self.coordinator.result_batches, [1])
        self.coordinator.assign(assignment("a2", "t2"))
        for _ in range(5):
            self.clock.advance(5.0)
        self.attempts["a2"].fail()
        self.assertEqual(self.coordinator.result_batches, [1, 1])

    def test_policy_from_replies_reaches_the_pacer(self) -> None:
        """The transfer policy the coordinator sets is applied to the worker's transfers."""
        self.coordinator.policy = Policy(packet_size=65536, packet_sleep=0.05, max_transfers=2)
        self.start()
        self.assertEqual(self.pacer.policies[-1], self.coordinator.policy)

    def test_stop_gives_back_running_attempts(self) -> None:
        """Stopping kills the running attempts and gives them back, without reporting them."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        d = self.service.stopService()
        self.successResultOf(d)
        self.assertEqual(self.coordinator.givebacks, [("w1", ["a1", "a2"])])
        self.assertTrue(all(a.killed and a.discarded for a in self.attempts.values()))
        self.assertEqual(self.coordinator.results, [])
        before = len(self.coordinator.requests)
        self.clock.advance(CoordinatorLink.RETRY_CAP * 10)
        self.assertEqual(len(self.coordinator.requests), before)

    def test_stop_is_bounded_when_the_coordinator_is_down(self) -> None:
        """Stopping while the coordinator is unreachable still ends, the giveback abandoned."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.coordinator.reachable = False
        d = self.service.stopService()
        self.successResultOf(d)
        self.assertEqual(self.coordinator.givebacks, [])
        self.assertTrue(self.attempts["a1"].killed)

    def test_suspended_worker_stops_its_attempts_and_asks_for_no_work(self) -> None:
        """A suspended worker stops its attempts and sends no Work Request until resumed."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        requests = len(self.coordinator.work_requests)
        self.service.suspend("the computer is in use")
        self.assertTrue(self.attempts["a1"].suspended)
        self.clock.advance(WorkerService.IDLE_POLL_MAX * 10)
        self.assertEqual(len(self.coordinator.work_requests), requests)
        self.service.resume()
        self.assertFalse(self.attempts["a1"].suspended)
        self.assertEqual(len(self.coordinator.work_requests), requests + 1)

    def test_work_alive_reports_suspended_attempts(self) -> None:
        """While suspended, Work Alive goes on and names each attempt "suspended"."""
        self.coordinator.assign(assignment("a1"))
        self.start()
        self.service.suspend("outside the allowed hours")
        self.clock.advance(10.0)
        self.service.resume()
        self.clock.advance(10.0)
        states = [body["running"] for _, body in self.coordinator.alive_bodies]
        suspended = [{"attempt": "a1", "state": "suspended"}]
        running = [{"attempt": "a1", "state": "running"}]
        # Told at once on each change, then with each beat.
        self.assertEqual(states, [suspended, suspended, running, running])

    def test_a_suspension_and_its_reason_reach_the_coordinator_at_once(self) -> None:
        """Suspending sends a Work Alive at once with the reason; every beat carries it while
        it lasts (the newest reason), and resuming sends one at once without it."""
        self.start()
        self.assertEqual(self.coordinator.alive_bodies, [])
        self.service.suspend("the computer is in use (5 min idle required)")
        self.service.suspend("outside the allowed hours 22:00-07:00")
        self.assertEqual(
            [body.get("suspended") for _, body in self.coordinator.alive_bodies],
            ["the computer is in use (5 min idle required)"],
        )
        self.clock.advance(10.0)
        self.service.resume()
        self.assertEqual(
            [body.get("suspended") for _, body in self.coordinator.alive_bodies],
            [
                "the computer is in use (5 min idle required)",
                "outside the allowed hours 22:00-07:00",
                None,
            ],
        )

    def test_a_worker_suspended_before_it_registers_says_so_in_its_registration(self) -> None:
        """A worker started outside its hours registers as suspended, with the reason."""
        self.service.suspend("outside the allowed hours 22:00-07:00")
        self.start()
        self.assertEqual(
            [r.suspended for r in self.coordinator.registrations],
            ["outside the allowed hours 22:00-07:00"],
        )
        self.assertEqual(self.coordinator.work_requests, [])

    def test_attempts_assigned_while_suspending_start_suspended(self) -> None:
        """Work that arrives after the worker suspended (a request already sent) waits too."""
        self.start()
        self.service.suspend("busy")
        self.coordinator.assign(assignment("a1"))
        # The nap of an idle worker ends; it is suspended, so it does not ask again.
        self.clock.advance(WorkerService.IDLE_POLL_MAX)
        self.assertEqual(self.attempts, {})
        self.service.resume()
        self.assertFalse(self.attempts["a1"].suspended)

    def test_give_back_held_kills_and_gives_back(self) -> None:
        """Attempts given back are killed, not reported, and named in one giveback."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        self.service.give_back_held("suspended for more than 30 min")
        self.assertEqual(self.coordinator.givebacks, [("w1", ["a1", "a2"])])
        self.assertTrue(all(a.killed and a.discarded for a in self.attempts.values()))
        self.assertEqual(self.coordinator.results, [])

    def test_fewer_slots_ask_for_less_work(self) -> None:
        """Lowering the slots in force asks for fewer tasks; never more than registered."""
        self.service.set_slots(1)
        self.start()
        self.assertEqual(self.coordinator.work_requests[-1].free_slots, 1)
        self.service.set_slots(8)
        self.clock.advance(WorkerService.IDLE_POLL_MAX)
        self.assertEqual(self.coordinator.work_requests[-1].free_slots, 2)

    def test_evicted_objects_are_reported_once_in_work_alive(self) -> None:
        """Objects evicted from the cache are named in the next Work Alive, then not again."""
        self.start()
        self.evictions.pending = ["e" * 64]
        self.coordinator.fail_next("alive", 503, "busy")
        self.clock.advance(10.0)
        self.clock.advance(10.0)
        self.clock.advance(10.0)
        bodies = [body for _, body in self.coordinator.alive_bodies]
        self.assertEqual([b.get("evicted") for b in bodies], [["e" * 64], None])


class SiteAndCacheTests(ServiceHarness):
    """Where a worker says it is, and what it says its cache holds."""

    def make_service(self, token: str | None = None) -> WorkerService:
        self.round_trips = {"http://near:1": 0.001, "http://far:1": 0.050}
        self.coordinator.warehouse_list = [
            {"id": "h-far", "url": "http://far:1", "site": "far"},
            {"id": "h-down", "url": "http://down:1", "site": "down"},
            {"id": "h-near", "url": "http://near:1", "site": "near"},
        ]

        async def round_trip(url: str) -> float:
            if url not in self.round_trips:
                raise ConnectionRefusedError(url)
            return self.round_trips[url]

        api = self.coordinator.api(token)
        return WorkerService(
            self.clock,
            api,
            self.facts(),
            self.new_attempt,
            self.store_object,
            self.pacer,
            retry_policy=TOP_OF_EACH_STEP,
            evictions=self.evictions,
            locate_site=lambda: nearest_site(api, round_trip),
            cache_contents=lambda: ["c" * 64, "d" * 64],
        )

    def facts(self) -> HostFacts:
        return FACTS

    def test_a_worker_without_a_site_takes_its_nearest_warehouses(self) -> None:
        self.coordinator.assign(assignment("a1"))
        self.start()
        [facts] = self.coordinator.registrations
        self.assertEqual(facts.site, "near")
        # Its outputs go to its site's warehouse.
        self.attempts["a1"].succeed()
        self.assertEqual(self.coordinator.upload_sites, ["near"])

    def test_the_registration_carries_the_cache_compactly(self) -> None:
        self.start()
        [facts] = self.coordinator.registrations
        self.assertEqual(facts.cached, ("c" * 16, "d" * 16))

    def test_no_warehouse_answering_leaves_the_site_unsaid(self) -> None:
        self.round_trips.clear()
        self.start()
        [facts] = self.coordinator.registrations
        self.assertIsNone(facts.site)


class ConfiguredSiteTests(SiteAndCacheTests):
    def facts(self) -> HostFacts:
        return replace(FACTS, site="lab")

    def test_a_worker_without_a_site_takes_its_nearest_warehouses(self) -> None:
        self.start()
        [facts] = self.coordinator.registrations
        self.assertEqual(facts.site, "lab")
        self.assertNotIn("warehouses", self.coordinator.routes())

    def test_no_warehouse_answering_leaves_the_site_unsaid(self) -> None:
        """A configured site needs no warehouse to answer."""
        self.round_trips.clear()
        self.start()
        self.assertEqual(self.coordinator.registrations[0].site, "lab")


class WorkAheadTests(ServiceHarness):
    """Short attempts: the worker holds twice as many again as its slots, results go together."""

    work_ahead = True

    def finish(self, attempt_id: str) -> None:
        # Inline outputs: no upload between the end and the report.
        self.attempts[attempt_id].succeed(attempt_id.encode(), inline=True)

    def states(self) -> dict[str, str]:
        return {h.attempt: h.state for h in self.service.held_attempts()}

    def result_requests(self) -> int:
        return self.coordinator.routes().count("results")

    def start_short(self) -> None:
        """Started, a1 and a2 running, a1 ended (short): b0 runs, b1 to b4 wait."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        self.coordinator.assign(*(assignment(f"b{n}", task=f"t{n}") for n in range(6)))
        self.finish("a1")

    def test_no_work_ahead_until_attempts_prove_short(self) -> None:
        """A new worker asks for its slots only; a long attempt's result asks for its slot."""
        self.coordinator.assign(assignment("a1"), assignment("a2"))
        self.start()
        self.assertEqual(self.coordinator.work_requests, [WorkRequest("w1", 1.5, 2)])
        self.assertEqual(self.coordinator.idle_slots, [2])
        self.clock.advance(WorkerService.SHORT_ATTEMPT * 5)
        self.finish("a1")
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 1)])

    def test_after_a_short_attempt_it_holds_twice_as_many_again_as_its_slots(self) -> None:
        """The result of a short attempt asks for its slot and four ahead; those beyond the
        slots wait, and the next starts the moment a slot is free, with no request."""
        self.start_short()
        self.assertEqual(WorkerService.AHEAD_PER_SLOT, 2)
        self.assertEqual(self.coordinator.result_work_requests, [WorkRequest("w1", 1.5, 5)])
        # Of the five, one is for a slot with nothing to run, four are asked for ahead.
        self.assertEqual(self.coordinator.idle_slots[-1], 1)
        self.assertEqual(
            self.states(),
            {"a2": "running", "b0": "running"} | {f"b{n}": "waiting" for n in range(1, 5)},
        )
        requests = len(self.coordinator.requests)
        self.finish("a2")
        self.assertEqual(self.states()["b1"], "running")
        self.assertEqual(len(self.coordinator.requests), requests)

    def test_results_wait_for_company_while_attempts_wait_to_run(self) -> None:
        """A result waits while attempts wait for a slot, until as many results as attempts
        held ahead have ended: they go in one request, which asks for as many attempts."""
        self.start_short()
        results = self.result_requests()
        for ended in ("a2", "b0", "b1"):  # b1, b2, b3 start; b4 still waits
            self.finish(ended)
            self.assertEqual(self.result_requests(), results)
        self.finish("b2")  # b4 starts, nothing waits: all four results go
        self.assertEqual(self.result_requests(), results + 1)
        self.assertEqual(self.coordinator.result_batches[-1], 4)
        self.assertEqual(
            [r.attempt for _w, r in self.coordinator.results[-4:]], ["a2", "b0", "b1", "b2"]
        )
        self.assertEqual(self.coordinator.result_work_requests[-1], WorkRequest("w1", 1.5, 4))

    def test_a_result_waits_no_longer_than_the_linger(self) -> None:
        self.start_short()
        results = self.result_requests()
        self.finish("a2")
        self.clock.advance(ResultReporter.REPORT_LINGER)
        self.assertEqual(self.result_requests(), results + 1)
        self.assertEqual(self.coordinator.results[-1][1].attempt, "a2")

    def test_a_waiting_attempt_cancelled_never_runs(self) -> None:
        """Cancelled by the coordinator before it had a slot: dropped, never started."""
        self.start_short()
        self.coordinator.cancel("b2")
        self.clock.advance(self.coordinator.alive_interval)
        self.assertNotIn("b2", self.service.running_attempts())
        self.assertTrue(self.attempts["b2"].discarded)
        self.assertFalse(self.attempts["b2"].killed)
        self.finish("a2")
        self.finish("b0")
        self.assertNotIn("b2", self.states())
        self.assertEqual(self.states()["b1"], "running")

    def test_stopping_gives_back_the_waiting_attempts_too(self) -> None:
        self.start_short()
        self.stop()
        [(_worker, given)] = self.coordinator.givebacks
        self.assertEqual(sorted(given), ["a2", "b0", "b1", "b2", "b3", "b4"])
