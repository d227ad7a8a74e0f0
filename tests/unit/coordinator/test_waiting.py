"""Requests held open until something happens: Work Requests waiting for work, polls waiting
for a job's end, and what becomes of them when their caller hangs up."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from tests.unit.coordinator.harness import CoordinatorTestCase, _d, wire_job
from xwch.coordinator.endings import JobEndings
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import ApiRequest, Caller, _HttpCaller
from xwch.protocol.objects import BinaryRef
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import Assignment, WorkRequest
from xwch.store import tokens


class HangingUp(Caller):
    """A caller that hangs up when told to."""

    def __init__(self) -> None:
        self.hung_up = False
        self._waiting: list[Deferred[None]] = []

    def gone(self) -> bool:
        return self.hung_up

    def when_gone(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def hang_up(self) -> None:
        self.hung_up = True
        for d in self._waiting:
            d.callback(None)


def given(attempt: str) -> Assignment:
    """An attempt handed out (what is in it does not matter here)."""
    return Assignment(
        attempt=attempt,
        job="j",
        task="t",
        number=1,
        binary=BinaryRef(digest="0" * 64, size=1),
        args=(),
        env={},
        inputs=(),
        outputs=(),
        timeout=None,
    )


class Tries:
    """Stands in for the scheduler's pick: hands out what is queued, counts the tries."""

    def __init__(self) -> None:
        self.ready: list[Assignment] = []
        self.count = 0
        # When set, the next try waits for this Deferred instead of answering at once.
        self.pending: Deferred[list[Assignment]] | None = None

    def __call__(self) -> Deferred[list[Assignment]]:
        self.count += 1
        if self.pending is not None:
            pending, self.pending = self.pending, None
            return pending
        out, self.ready = self.ready[:1], self.ready[1:]
        return succeed(out)


class WorkWaitingRoomTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tries = Tries()
        self.room = WorkWaitingRoom(self.clock, lambda: len(self.tries.ready))

    def wait(
        self, worker: str = "k1", seconds: float = 20.0, caller: Caller | None = None
    ) -> Deferred[list[Assignment]]:
        return self.room.wait(
            worker, seconds, self.tries, caller or HangingUp(), seen=self.room.appeared
        )

    def appear(self, *attempts: str) -> None:
        self.tries.ready.extend(given(a) for a in attempts)
        for _ in attempts:
            self.room.work_appeared()

    def test_answered_with_the_work_that_appears_once_the_turn_is_over(self) -> None:
        """Many tasks become ready in one turn: the waiting requests try once, after it."""
        answer = self.wait()
        self.appear("a1", "a2")
        self.assertNoResult(answer)
        self.clock.advance(0)
        self.assertEqual([a.attempt for a in self.successResultOf(answer)], ["a1"])
        self.assertEqual((self.tries.count, len(self.room)), (1, 0))

    def test_answered_with_nothing_once_its_time_is_over(self) -> None:
        answer = self.wait(seconds=5.0)
        self.clock.advance(4.9)
        self.assertNoResult(answer)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(answer), [])
        self.assertEqual(len(self.room), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_request_waits_longer_than_the_cap(self) -> None:
        answer = self.wait(seconds=3600.0)
        self.clock.advance(WorkWaitingRoom.MAX_WAIT)
        self.assertEqual(self.successResultOf(answer), [])

    def test_requests_are_served_in_the_order_they_came(self) -> None:
        first, second, third = self.wait("k1"), self.wait("k2"), self.wait("k3")
        self.appear("a1", "a2")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(first)[0].attempt, "a1")
        self.assertEqual(self.successResultOf(second)[0].attempt, "a2")
        self.assertNoResult(third)
        # Nothing was left to pick: the third did not even try.
        self.assertEqual(self.tries.count, 2)

    def test_workers_that_cannot_take_the_ready_tasks_make_no_long_pass(self) -> None:
        """Tasks ready that no waiting worker may run: each pass tries at most FRUITLESS_MOST,
        sends them to the back of the line, and the next pass tries the others."""
        tried: list[int] = []

        def nothing_for(n: int) -> Callable[[], Deferred[list[Assignment]]]:
            def try_again() -> Deferred[list[Assignment]]:
                tried.append(n)
                return succeed([])

            return try_again

        room = WorkWaitingRoom(self.clock, lambda: 1)  # a task is ready, for nobody here
        most = WorkWaitingRoom.FRUITLESS_MOST
        count = most * 2 + 5
        for n in range(count):
            room.wait(f"k{n}", 20.0, nothing_for(n), HangingUp(), seen=room.appeared)
        room.work_appeared()
        self.clock.advance(0)
        self.assertEqual(tried, list(range(most)))
        self.clock.advance(WorkWaitingRoom.NEXT_PASS_DELAY)
        self.assertEqual(tried[most:], list(range(most, 2 * most)))
        self.clock.advance(WorkWaitingRoom.NEXT_PASS_DELAY)
        # The third pass begins with the five never tried, then those tried first.
        self.assertEqual(tried[2 * most :], [*range(2 * most, count), *range(most - 5)])
        self.assertEqual(len(room), count)

    def test_a_newer_request_of_the_same_worker_answers_the_older_with_nothing(self) -> None:
        older = self.wait("k1")
        newer = self.wait("k1")
        self.assertEqual(self.successResultOf(older), [])
        self.assertNoResult(newer)
        self.assertEqual(len(self.room), 1)

    def test_a_caller_that_hangs_up_stops_waiting(self) -> None:
        caller = HangingUp()
        answer = self.wait(caller=caller)
        caller.hang_up()
        self.assertEqual(self.successResultOf(answer), [])
        self.assertEqual(len(self.room), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_try_on_its_way_when_the_time_is_over_is_the_answer(self) -> None:
        """Attempts being recorded for a request are never dropped: they are its answer."""
        answer = self.wait(seconds=5.0)
        self.tries.pending = self.last_pending = Deferred()
        self.appear("a1")
        self.clock.advance(0)
        pending = self.tries.count
        self.clock.advance(5.0)
        self.assertNoResult(answer)
        self.room.work_appeared()
        self.clock.advance(0)
        self.assertEqual(self.tries.count, pending)  # over: not tried again
        self.last_pending.callback([given("a1")])
        self.assertEqual([a.attempt for a in self.successResultOf(answer)], ["a1"])

    def test_work_appearing_during_a_try_that_finds_none_is_tried_for_again(self) -> None:
        answer = self.wait()
        self.tries.pending = self.last_pending = Deferred()
        self.appear("a1")
        self.clock.advance(0)
        # While the first try is recorded (it picked nothing), a2 becomes ready.
        self.room.work_appeared()
        self.clock.advance(0)
        self.assertEqual(self.tries.count, 1)
        self.last_pending.callback([])
        self.assertEqual([a.attempt for a in self.successResultOf(answer)], ["a1"])
        self.assertEqual(self.tries.count, 2)

    def test_work_that_appeared_before_it_came_to_wait_is_tried_for_at_once(self) -> None:
        """Between a request's first try and its wait, work appeared: it is not missed."""
        seen = self.room.appeared
        self.appear("a1")
        answer = self.room.wait("k1", 20.0, self.tries, HangingUp(), seen=seen)
        self.assertEqual([a.attempt for a in self.successResultOf(answer)], ["a1"])

    def test_a_failed_try_is_the_answer(self) -> None:
        answer = self.wait()
        self.tries.pending = fail(RuntimeError("the store is down"))
        self.appear("a1")
        self.clock.advance(0)
        self.failureResultOf(answer, RuntimeError)
        self.assertEqual(len(self.room), 0)

    def test_closing_answers_everyone_and_holds_no_more(self) -> None:
        first, second = self.wait("k1"), self.wait("k2")
        self.room.close()
        self.assertEqual(self.successResultOf(first), [])
        self.assertEqual(self.successResultOf(second), [])
        self.assertEqual(self.successResultOf(self.wait("k3")), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class JobEndingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endings = JobEndings(self.clock)

    def test_told_when_the_job_ends(self) -> None:
        done = self.endings.wait("j1", 10.0, HangingUp())
        other = self.endings.wait("j2", 10.0, HangingUp())
        self.endings.ended("j1")
        self.successResultOf(done)
        self.assertNoResult(other)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_told_when_its_time_is_over_or_its_caller_hangs_up(self) -> None:
        timed = self.endings.wait("j1", 10.0, HangingUp())
        caller = HangingUp()
        hung = self.endings.wait("j1", 10.0, caller)
        caller.hang_up()
        self.successResultOf(hung)
        self.assertNoResult(timed)
        self.clock.advance(10.0)
        self.successResultOf(timed)
        self.assertEqual(self.endings.waiting("j1"), 0)


class HttpCallerTests(SynchronousTestCase):
    """The caller of a real ``twisted.web`` request."""

    def test_gone_once_the_connection_is_lost(self) -> None:
        request = Request(DummyChannel())
        caller = _HttpCaller(request)
        hung_up = caller.when_gone()
        self.assertFalse(caller.gone())
        request.connectionLost(Failure(ConnectionError("reset")))
        self.assertTrue(caller.gone())
        self.successResultOf(hung_up)
        self.successResultOf(caller.when_gone())

    def test_not_gone_when_answered(self) -> None:
        request = Request(DummyChannel())
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        hung_up = _HttpCaller(request).when_gone()
        request.finish()
        self.assertNoResult(hung_up)


class HeldRequestsApiTests(CoordinatorTestCase):
    """Through the HTTP API, on a Clock."""

    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        with self.db.engine.begin() as conn:
            self.secrets = {
                role: tokens.create_token_thd(conn, role, role, 0.0)
                for role in ("client", "worker")
            }
        code, reg = self.answer(
            self.send(
                "POST",
                "/workers",
                "worker",
                {
                    "name": "h",
                    "address": "127.0.0.1",
                    "platform": "linux-x86_64",
                    "cores": 2,
                    "memory": 1,
                    "slots": 2,
                    "performance": 1.0,
                    "site": None,
                    "protocol": PROTOCOL_VERSION,
                },
            )
        )
        self.assertEqual(code, 201)
        self.worker = reg["worker_id"]

    def send(self, method: str, path: str, role: str, body: Any = None) -> Deferred[Any]:
        d = self.http.request(
            method,
            "http://coordinator/api/v1" + path,
            headers={"Authorization": "Bearer " + self.secrets[role]},
            data=None if body is None else json.dumps(body).encode(),
        )
        self.http.flush()
        return d

    def answer(self, d: Deferred[Any]) -> tuple[int, Any]:
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content)

    def ask_work(self, wait: Any) -> Deferred[Any]:
        body = {"performance": 1.0, "free_slots": 2, "wait": wait}
        return self.send("POST", f"/workers/{self.worker}/work", "worker", body)

    def test_a_work_request_waits_for_a_job_and_gets_its_tasks(self) -> None:
        """An idle worker's request is answered the moment a job is submitted."""
        asked = self.ask_work(20)
        self.assertNoResult(asked)
        self.submit(wire_job([{"id": "t1"}, {"id": "t2"}, {"id": "t3"}]))
        self.clock.advance(0)
        code, body = self.answer(asked)
        self.assertEqual(code, 200)
        self.assertEqual(len(body["tasks"]), 2)
        self.assertIn("policy", body)

    def test_a_work_request_answers_nothing_after_its_wait(self) -> None:
        asked = self.ask_work(2.5)
        self.clock.advance(2.4)
        self.assertNoResult(asked)
        self.clock.advance(0.1)
        self.assertEqual(self.answer(asked)[1]["tasks"], [])

    def test_a_work_request_without_wait_is_answered_at_once(self) -> None:
        body = {"performance": 1.0, "free_slots": 2}
        code, answer = self.answer(
            self.send("POST", f"/workers/{self.worker}/work", "worker", body)
        )
        self.assertEqual((code, answer["tasks"]), (200, []))

    def test_a_bad_wait_is_refused_naming_it(self) -> None:
        for bad in (-1, "soon", True):
            code, body = self.answer(self.ask_work(bad))
            self.assertEqual((code, body["error"]), (400, "bad_request"), bad)
            self.assertIn("work.wait", body["message"])
        self.assertEqual(len(self.coordinator.waiting), 0)

    def test_a_waiting_request_does_not_count_against_admission(self) -> None:
        """Admission bounds the requests being worked on: a thousand idle workers waiting
        must not lock out the ones with results to report."""
        self.coordinator.communication.max_work_requests = 1
        asked = self.ask_work(20)
        self.assertNoResult(asked)
        self.assertEqual(self.coordinator.communication.work_requests_in_flight, 0)
        body = {"performance": 1.0, "free_slots": 2}
        code, _ = self.answer(self.send("POST", f"/workers/{self.worker}/work", "worker", body))
        self.assertEqual(code, 200)

    def test_attempts_given_to_a_caller_that_hung_up_run_again(self) -> None:
        """Work assigned as its caller hangs up never reaches it: the tasks are ready again
        at once, no failure counted, rather than after three missed Work Alives."""
        job = self.submit(wire_job([{"id": "t1"}]))
        caller = HangingUp()
        caller.hang_up()
        request = ApiRequest(
            token=self.worker_token_of_registered(),
            params={"worker": self.worker},
            query={},
            body=WorkRequest(performance=1.0, free_slots=2),
            caller=caller,
        )
        self.successResultOf(_d(self.coordinator.api.work_request(request)))
        state = self.coordinator.tasks.jobs[job].tasks["t1"]
        self.assertEqual((state.state, state.failures), ("ready", 0))
        self.assertTrue(self.coordinator.scheduler.is_ready((job, "t1")))

    def worker_token_of_registered(self) -> Any:
        with self.db.engine.begin() as conn:
            return tokens.find_token_thd(conn, self.secrets["worker"])

    def test_a_job_poll_waits_for_the_end(self) -> None:
        job = self.submit(wire_job([{"id": "t1"}]))
        polled = self.send("GET", f"/jobs/{job}?wait=10", "client")
        self.assertNoResult(polled)
        self.coordinator.tasks.endings.ended(job)  # as after the end is committed
        code, body = self.answer(polled)
        self.assertEqual((code, body["id"]), (200, job))

    def test_a_job_poll_is_answered_when_the_job_ends_and_its_end_is_stored(self) -> None:
        job = self.submit(wire_job([{"id": "t1"}]))
        polled = self.send("GET", f"/jobs/{job}?wait=10", "client")
        code, _ = self.answer(self.send("POST", f"/jobs/{job}/cancel", "client"))
        self.assertEqual(code, 200)
        self.assertNoResult(polled)  # the end is announced once the turn is over
        self.clock.advance(0)
        code, body = self.answer(polled)
        self.assertEqual((code, body["state"]), (200, "cancelled"))

    def test_a_poll_coming_between_the_end_and_its_storing_waits_for_the_storing(self) -> None:
        """Ended in memory but not stored yet: the poll is not answered with a running job."""
        job = self.submit(wire_job([{"id": "t1"}]))
        self.answer(self.send("POST", f"/jobs/{job}/cancel", "client"))
        self.assertNotIn(job, self.coordinator.tasks.jobs)
        polled = self.send("GET", f"/jobs/{job}?wait=10", "client")
        self.assertNoResult(polled)
        self.clock.advance(0)
        code, body = self.answer(polled)
        self.assertEqual((code, body["state"]), (200, "cancelled"))
        self.assertEqual(self.coordinator.tasks.ending, set())

    def test_a_job_poll_answers_after_its_wait_or_at_once_for_an_ended_job(self) -> None:
        job = self.submit(wire_job([{"id": "t1"}]))
        polled = self.send("GET", f"/jobs/{job}?wait=3", "client")
        self.clock.advance(3)
        self.assertEqual(self.answer(polled)[1]["state"], "running")
        self.answer(self.send("POST", f"/jobs/{job}/cancel", "client"))
        self.clock.advance(0)
        code, body = self.answer(self.send("GET", f"/jobs/{job}?wait=3", "client"))
        self.assertEqual((code, body["state"]), (200, "cancelled"))

    def test_a_bad_job_poll_wait_is_refused_naming_it(self) -> None:
        job = self.submit(wire_job([{"id": "t1"}]))
        for bad in ("-1", "later", "inf", "nan"):
            code, body = self.answer(self.send("GET", f"/jobs/{job}?wait={bad}", "client"))
            self.assertEqual((code, body["error"]), (400, "bad_request"), bad)
            self.assertIn("wait", body["message"])
