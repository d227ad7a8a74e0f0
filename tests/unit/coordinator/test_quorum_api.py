"""Replicated tasks through the HTTP API: results a worker has no right to give are refused
with a reason, one by one, and never break the request."""

from __future__ import annotations

from typing import Any

from tests.unit.coordinator import test_api
from tests.unit.coordinator.harness import wire_job
from tests.unit.coordinator.test_api import ApiHarness

result = test_api.ApiTests._result


class QuorumApiTests(ApiHarness):
    def work(self, worker: str) -> list[dict[str, Any]]:
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/work",
            role="worker",
            body={"performance": 1.0, "free_slots": 2},
        )
        self.assertEqual(code, 200)
        return [dict(a) for a in body["tasks"]]

    def results(self, worker: str, *attempts: str) -> list[dict[str, Any]]:
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={"results": [result(a) for a in attempts]},
        )
        self.assertEqual(code, 200)
        return list(body["results"])

    def test_results_for_replicas_never_given_or_given_twice_are_refused(self) -> None:
        """A worker answering another's replica, or a task it already answered, gets 403 for
        that result alone; the vote goes on with the results that count."""
        self.submit(wire_job([{"id": "x", "quorum": 2}]))
        a, b = self.register_worker(), self.register_worker()
        [mine], [theirs] = self.work(a), self.work(b)
        forbidden, accepted = self.results(a, theirs["attempt"], mine["attempt"])
        self.assertEqual(forbidden["error"], "forbidden")
        self.assertIn("not given to this worker", forbidden["message"])
        self.assertEqual(accepted, {"accepted": True})
        # As if a held the other replica too (one it had before it was lost and came back).
        self.coordinator.tasks.attempts[theirs["attempt"]].worker_id = a
        [twice] = self.results(a, theirs["attempt"])
        self.assertEqual(twice["error"], "forbidden")
        self.assertIn("one worker, one result", twice["message"])
        self.coordinator.tasks.attempts[theirs["attempt"]].worker_id = b
        self.assertEqual(self.results(b, theirs["attempt"]), [{"accepted": True}])
        self.assertEqual(self.coordinator.tasks.jobs, {})
