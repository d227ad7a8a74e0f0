"""The worker's routes, one set of cases run against the real coordinator and against the fake
the worker's tests use (tests/fakes/coordinator.py), so the two cannot drift apart.

Each case talks HTTP (in memory) and reads the answer with the protocol's own messages: what
passes here is what a worker gets from either.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator import WORKER_TOKEN, FakeCoordinator
from tests.unit.coordinator.harness import CoordinatorTestCase, wire_job
from xwch.protocol.codec import convert
from xwch.protocol.objects import BinaryRef
from xwch.protocol.wire import API_PREFIX, PROTOCOL_VERSION
from xwch.protocol.worker import AliveAnswer, Assignment, Registered, ResultsAnswer, WorkAnswer
from xwch.store import tokens

FACTS: dict[str, Any] = {
    "name": "h",
    "address": "127.0.0.1",
    "platform": "linux-x86_64",
    "cores": 2,
    "memory": 2**30,
    "slots": 2,
    "performance": 1.0,
    "protocol": PROTOCOL_VERSION,
}


class WorkerRoutesContract:
    """The cases; a subclass says how to reach its coordinator and how to make tasks ready."""

    http: StubTreq
    token: str

    def queue_tasks(self, count: int) -> None:
        raise NotImplementedError

    # mixed into a SynchronousTestCase
    assertEqual: Any
    assertIn: Any
    successResultOf: Any

    def call(self, method: str, route: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = None if body is None else json.dumps(body).encode()
        d = self.http.request(
            method, f"http://coordinator{API_PREFIX}{route}", headers=headers, data=data
        )
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content) if content else None

    def register(self) -> str:
        code, answer = self.call("POST", "/workers", FACTS)
        self.assertIn(code, (200, 201))
        return convert(answer, Registered, "register").worker_id

    def test_a_registration_is_answered_with_an_id_a_beat_and_a_policy(self) -> None:
        code, answer = self.call("POST", "/workers", FACTS)
        self.assertIn(code, (200, 201))
        registered = convert(answer, Registered, "register")
        self.assertEqual(registered.protocol, PROTOCOL_VERSION)

    def test_a_worker_of_another_protocol_is_refused_saying_so(self) -> None:
        code, answer = self.call("POST", "/workers", {**FACTS, "protocol": 0})
        self.assertEqual((code, answer["error"]), (400, "protocol_version"))
        self.assertIn("same XWCH release", answer["message"])

    def test_a_register_request_missing_a_field_names_it(self) -> None:
        facts = {k: v for k, v in FACTS.items() if k != "address"}
        code, answer = self.call("POST", "/workers", facts)
        self.assertEqual((code, answer["error"]), (400, "bad_request"))
        self.assertIn("register.address: missing field", answer["message"])

    def test_a_work_request_gets_at_most_its_free_slots_of_tasks(self) -> None:
        worker = self.register()
        self.queue_tasks(3)
        body = {"performance": 1.0, "free_slots": 2}
        code, answer = self.call("POST", f"/workers/{worker}/work", body)
        self.assertEqual(code, 200)
        self.assertEqual(len(convert(answer, WorkAnswer, "work").tasks), 2)

    def test_a_malformed_work_request_names_the_field(self) -> None:
        worker = self.register()
        body = {"performance": 1.0, "free_slots": 2, "idle_slots": -1}
        code, answer = self.call("POST", f"/workers/{worker}/work", body)
        self.assertEqual((code, answer["error"]), (400, "bad_request"))
        self.assertIn("work.idle_slots: expected `int` >= 0", answer["message"])

    def test_results_are_answered_each_with_the_work_asked_for(self) -> None:
        worker = self.register()
        self.queue_tasks(2)
        code, work = self.call(
            "POST", f"/workers/{worker}/work", {"performance": 1, "free_slots": 1}
        )
        [given] = convert(work, WorkAnswer, "work").tasks
        result = {"attempt": given.attempt, "outcome": "failed", "exit_code": 1}
        report = {"results": [result], "work": {"performance": 1.0, "free_slots": 1}}
        code, answer = self.call("POST", f"/workers/{worker}/results", report)
        self.assertEqual(code, 200)
        answered = convert(answer, ResultsAnswer, "results")
        self.assertEqual([a.accepted for a in answered.results], [True])
        self.assertEqual(len(answered.tasks or ()), 1)

    def test_a_malformed_result_names_its_place(self) -> None:
        worker = self.register()
        report = {"results": [{"attempt": "a1"}]}
        code, answer = self.call("POST", f"/workers/{worker}/results", report)
        self.assertEqual((code, answer["error"]), (400, "bad_request"))
        self.assertIn("report.results[0].outcome: missing field", answer["message"])

    def test_a_work_alive_is_answered_with_cancels_and_a_policy(self) -> None:
        worker = self.register()
        code, answer = self.call("POST", f"/workers/{worker}/alive", {"running": []})
        self.assertEqual(code, 200)
        self.assertEqual(convert(answer, AliveAnswer, "alive").cancel, ())

    def test_given_back_attempts_are_taken(self) -> None:
        worker = self.register()
        self.queue_tasks(1)
        code, work = self.call(
            "POST", f"/workers/{worker}/work", {"performance": 1, "free_slots": 1}
        )
        [given] = convert(work, WorkAnswer, "work").tasks
        code, answer = self.call(
            "POST", f"/workers/{worker}/giveback", {"attempts": [given.attempt]}
        )
        self.assertEqual((code, answer), (200, {}))

    def test_an_unknown_worker_is_told_to_register_again(self) -> None:
        code, answer = self.call(
            "POST", "/workers/w-nobody/work", {"performance": 1, "free_slots": 1}
        )
        self.assertEqual((code, answer["error"]), (404, "unknown_worker"))

    def test_an_unknown_token_is_refused(self) -> None:
        code, answer = self.call("POST", "/workers", FACTS, token="forged")
        self.assertEqual((code, answer["error"]), (401, "unauthorized"))


class RealCoordinatorContractTests(WorkerRoutesContract, CoordinatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        with self.db.engine.begin() as conn:
            self.token = tokens.create_token_thd(conn, "worker", "worker", 0.0)

    def queue_tasks(self, count: int) -> None:
        self.submit(wire_job([{"id": f"t{n}"} for n in range(count)]))


class FakeCoordinatorContractTests(WorkerRoutesContract, SynchronousTestCase):
    def setUp(self) -> None:
        self.fake = FakeCoordinator()
        self.http = StubTreq(self.fake)
        self.token = WORKER_TOKEN
        self.queued = 0

    def queue_tasks(self, count: int) -> None:
        for _ in range(count):
            self.queued += 1
            self.fake.assign(
                Assignment(
                    attempt=f"a{self.queued}",
                    job="j1",
                    task=f"t{self.queued}",
                    number=1,
                    binary=BinaryRef(digest="b" * 64, size=10),
                    args=(),
                    env={},
                    inputs=(),
                    outputs=(),
                )
            )
