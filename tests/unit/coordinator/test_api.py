"""The coordinator's HTTP API: authentication, roles, clear errors, admission control."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred

from tests.unit.coordinator.harness import BINARY, CoordinatorTestCase, wire_job
from xwch import capability
from xwch.errors import CapabilityError
from xwch.protocol.wire import INLINE_MOST, PROTOCOL_VERSION
from xwch.protocol.worker import HostFacts
from xwch.store import tokens


class ApiHarness(CoordinatorTestCase):
    """The coordinator's HTTP API, called as its clients do."""

    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        self.secrets = {}
        for role in ("client", "worker", "warehouse"):
            with self.db.engine.begin() as conn:
                self.secrets[role] = tokens.create_token_thd(conn, role, role, 0.0)

    def call(
        self,
        method: str,
        path: str,
        role: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Any]:
        headers = {}
        if role is not None:
            headers["Authorization"] = "Bearer " + self.secrets.get(role, role)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        d = self.http.request(
            method, "http://coordinator/api/v1" + path, headers=headers, data=data
        )
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        self.http.flush()
        return response.code, json.loads(content), response.headers

    def register_worker(self) -> str:
        """A worker registered through the API; its id."""
        facts = HostFacts("h", "127.0.0.1", "linux-x86_64", 2, 1, 2, 1.0, protocol=PROTOCOL_VERSION)
        code, reg, _ = self.call("POST", "/workers", role="worker", body=facts.to_json())
        self.assertEqual(code, 201)
        return str(reg["worker_id"])


class ApiTests(ApiHarness):
    def test_missing_or_unknown_token_is_refused(self) -> None:
        """Nothing is open: a request without a valid token gets 401 and a reason."""
        code, body, _ = self.call("GET", "/jobs")
        self.assertEqual((code, body["error"]), (401, "unauthorized"))
        code, body, _ = self.call("GET", "/jobs", role="xwch_client_forged")
        self.assertEqual((code, body["message"]), (401, "unknown token"))

    def test_token_of_the_wrong_role_is_refused(self) -> None:
        """A worker's token cannot list jobs, and a client's cannot register a worker."""
        code, body, _ = self.call("GET", "/jobs", role="worker")
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        code, _, _ = self.call("POST", "/workers", role="client", body={})
        self.assertEqual(code, 403)
        code, _, _ = self.call("POST", "/warehouses", role="worker", body={})
        self.assertEqual(code, 403)
        code, body, _ = self.call("GET", "/jobs", role="client")
        self.assertEqual((code, body), (200, {"jobs": []}))

    def test_openapi_document_lists_every_route(self) -> None:
        """The API describes itself at /api/v1/openapi.json, without a token."""
        code, doc, _ = self.call("GET", "/openapi.json")
        self.assertEqual(code, 200)
        self.assertEqual(doc["openapi"], "3.1.0")
        self.assertIn("/api/v1/workers/{worker}/work", doc["paths"])
        self.assertEqual(doc["paths"]["/api/v1/jobs"]["post"]["x-xwch-roles"], ["client"])

    def test_bad_bodies_get_a_clear_error(self) -> None:
        """Malformed JSON or a missing field is a 400 that names the problem."""
        code, body, _ = self.call("POST", "/workers", role="worker", raw=b"{not json")
        self.assertEqual(code, 400)
        self.assertIn("not valid JSON", body["message"])
        code, body, _ = self.call("POST", "/workers", role="worker", body={"name": "x"})
        self.assertEqual(code, 400)
        self.assertIn("register.address: missing field", body["message"])
        code, body, _ = self.call(
            "POST", "/objects/downloads", role="client", body={"digests": ["zz"]}
        )
        self.assertEqual(code, 400)
        self.assertIn("downloads.digests[0]", body["message"])

    def test_invalid_job_is_refused_and_not_created(self) -> None:
        """An invalid job gets 400 with the validation message, and no job exists afterwards."""
        code, body, _ = self.call(
            "POST", "/jobs", role="client", body=wire_job([{"id": "x", "after": ["x"]}])
        )
        self.assertEqual((code, body["error"]), (400, "invalid_job"))
        self.assertIn("<job>", body["message"])
        self.assertEqual(self.call("GET", "/jobs", role="client")[1], {"jobs": []})

    def test_job_status_tasks_and_unknown_job(self) -> None:
        """A created job is listed with its tasks counted by state; an unknown job is a 404."""
        code, body, _ = self.call(
            "POST",
            "/jobs",
            role="client",
            body=wire_job([{"id": "x"}, {"id": "y", "after": ["x"]}]),
        )
        self.assertEqual(code, 201)
        job = body["id"]
        code, status, _ = self.call("GET", f"/jobs/{job}", role="client")
        self.assertEqual(
            (status["state"], status["counts"]["ready"], status["counts"]["blocked"]),
            ("running", 1, 1),
        )
        code, tasks, _ = self.call("GET", f"/jobs/{job}/tasks", role="client")
        self.assertEqual([t["id"] for t in tasks["tasks"]], ["x", "y"])
        code, body, _ = self.call("GET", "/jobs/nope", role="client")
        self.assertEqual((code, body["error"]), (404, "not_found"))
        code, body, _ = self.call("GET", f"/jobs/{job}/tasks/x/logs", role="client")
        self.assertEqual(code, 404)
        self.assertEqual(body["message"], "task x has not run yet")

    def test_work_requests_beyond_the_limit_are_told_to_retry_after(self) -> None:
        """Past the admission limit a worker is told to retry later, not queued."""
        worker = self.register_worker()
        self.coordinator.communication.max_work_requests = 0
        code, body, headers = self.call(
            "POST",
            f"/workers/{worker}/work",
            role="worker",
            body={"performance": 1.0, "free_slots": 2},
        )
        self.assertEqual((code, body["error"]), (503, "busy"))
        self.assertGreater(body["retry_after"], 0)
        self.assertTrue(headers.getRawHeaders(b"retry-after"))

    def test_unknown_worker_must_register_again(self) -> None:
        """A worker the coordinator does not know (or declared lost) is told to register."""
        code, body, _ = self.call(
            "POST", "/workers/kmissing/alive", role="worker", body={"running": []}
        )
        self.assertEqual((code, body["error"]), (404, "unknown_worker"))

    def test_uploads_give_put_capabilities_only_for_missing_objects(self) -> None:
        """A client uploads only what no warehouse holds yet, with a capability for each."""
        from tests.unit.coordinator.harness import BINARY, digest_of

        new = digest_of("new")
        code, body, _ = self.call(
            "POST",
            "/objects/uploads",
            role="client",
            body={"objects": [{"digest": BINARY, "size": 6}, {"digest": new, "size": 3}]},
        )
        self.assertEqual(code, 200)
        by_digest = {o["digest"]: o for o in body["objects"]}
        self.assertTrue(by_digest[BINARY]["present"])
        self.assertIsNone(by_digest[BINARY]["capability"])
        self.assertFalse(by_digest[new]["present"])
        self.assertTrue(by_digest[new]["capability"])
        self.assertEqual(body["warehouse"]["url"], "http://127.0.0.1:9")

    def test_uploads_go_to_a_warehouse_of_the_site_asked_for(self) -> None:
        """A worker's outputs go to its own site's warehouse; other callers get the roomiest."""
        from tests.unit.coordinator.harness import digest_of

        small = self.successResultOf(
            ensureDeferred(
                self.coordinator.catalog.register("http://127.0.0.1:10", "far-lab", 10, 10)
            )
        )
        objects = [{"digest": digest_of("out"), "size": 3}]

        def warehouse_for(**site: str) -> str:
            code, answer, _ = self.call(
                "POST", "/objects/uploads", role="worker", body={"objects": objects, **site}
            )
            self.assertEqual(code, 200)
            return str(answer["warehouse"]["url"])

        self.assertEqual(warehouse_for(site="far-lab"), small.url)
        self.assertEqual(warehouse_for(site="lab"), "http://127.0.0.1:9")
        self.assertEqual(warehouse_for(), "http://127.0.0.1:9")

    def test_assignments_say_where_a_worker_stores_small_outputs(self) -> None:
        """An assignment carries its worker's site's warehouse, with a capability to store any
        object there and nowhere else: small outputs need no uploads plan."""
        far = self.successResultOf(
            ensureDeferred(
                self.coordinator.catalog.register("http://127.0.0.1:10", "far-lab", 10, 10)
            )
        )
        facts = HostFacts(
            "h",
            "127.0.0.1",
            "linux-x86_64",
            2,
            1,
            2,
            1.0,
            site="far-lab",
            protocol=PROTOCOL_VERSION,
        )
        code, reg, _ = self.call("POST", "/workers", role="worker", body=facts.to_json())
        self.assertEqual(code, 201)
        assignment = self._first_attempt(str(reg["worker_id"]), 1)
        upload = assignment["upload"]
        self.assertEqual(upload["url"], far.url)
        key, now = self.coordinator.catalog.capability_key, self.clock.seconds()
        from tests.unit.coordinator.harness import digest_of

        for digest in (digest_of("one output"), digest_of("another")):
            capability.verify(key, upload["capability"], "put", digest, far.id, now)
        with self.assertRaises(CapabilityError):
            capability.verify(key, upload["capability"], "get", digest_of("x"), far.id, now)

    def test_live_warehouses_are_listed_with_their_sites(self) -> None:
        code, answer, _ = self.call("GET", "/warehouses", role="worker")
        self.assertEqual(code, 200)
        self.assertEqual(
            [(w["url"], w["site"]) for w in answer["warehouses"]], [("http://127.0.0.1:9", "lab")]
        )
        self.assertEqual(self.call("GET", "/warehouses", role="warehouse")[0], 403)

    def test_bad_cache_reports_are_refused_with_the_field_named(self) -> None:
        facts = HostFacts(
            "h", "127.0.0.1", "linux-x86_64", 2, 1, 2, 1.0, protocol=PROTOCOL_VERSION
        ).to_json()
        code, body, _ = self.call(
            "POST", "/workers", role="worker", body={**facts, "cached": ["XYZ"]}
        )
        self.assertEqual(code, 400)
        self.assertIn("register.cached[0]", body["message"])
        worker = self.register_worker()
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/alive",
            role="worker",
            body={"running": [], "evicted": ["not-a-digest"]},
        )
        self.assertEqual(code, 400)
        self.assertIn("alive.evicted[0]", body["message"])

    def test_workers_listing_counts_tasks_done(self) -> None:
        """`workers` shows how many tasks each worker has completed."""
        from tests.unit.coordinator.harness import digest_of

        worker = self.register_worker()
        assignment = self._first_attempt(worker, tasks=1, outputs=["o"])
        self.store_objects(digest_of("o"))
        result = {
            "attempt": assignment["attempt"],
            "outcome": "succeeded",
            "exit_code": 0,
            "error": None,
            "outputs": [{"name": "o", "digest": digest_of("o"), "size": 4}],
            "stdout": "",
            "stderr": "",
            "duration": 0.1,
        }
        code, body, _ = self.call(
            "POST", f"/workers/{worker}/results", role="worker", body={"results": [result]}
        )
        self.assertEqual((code, body), (200, {"results": [{"accepted": True}]}))
        code, listed, _ = self.call("GET", "/workers", role="client")
        [row] = listed["workers"]
        self.assertEqual((row["name"], row["state"], row["tasks_done"]), ("h", "alive", 1))

    def test_a_suspended_worker_is_listed_suspended_with_its_reason(self) -> None:
        """A Work Alive saying why the worker computes nothing shows it `suspended` with that
        reason; one without shows it alive again."""
        worker = self.register_worker()

        def alive(**extra: Any) -> dict[str, Any]:
            code, _, _ = self.call(
                "POST", f"/workers/{worker}/alive", role="worker", body={"running": [], **extra}
            )
            self.assertEqual(code, 200)
            [row] = self.call("GET", "/workers", role="client")[1]["workers"]
            return {k: row[k] for k in ("state", "reason")}

        self.assertEqual(
            alive(suspended="the computer is in use (5 min idle required)"),
            {"state": "suspended", "reason": "the computer is in use (5 min idle required)"},
        )
        self.assertEqual(alive(), {"state": "alive", "reason": None})

    def test_a_worker_registering_suspended_is_listed_suspended(self) -> None:
        """A worker started outside its hours says so in its Register Request."""
        facts = HostFacts(
            "h",
            "127.0.0.1",
            "linux-x86_64",
            2,
            1,
            2,
            1.0,
            protocol=PROTOCOL_VERSION,
            suspended="outside the allowed hours 22:00-07:00",
        )
        code, _, _ = self.call("POST", "/workers", role="worker", body=facts.to_json())
        self.assertEqual(code, 201)
        [row] = self.call("GET", "/workers", role="client")[1]["workers"]
        self.assertEqual(
            (row["state"], row["reason"]), ("suspended", "outside the allowed hours 22:00-07:00")
        )

    def test_a_suspension_reason_is_one_bounded_line(self) -> None:
        """An empty or overlong reason is refused, naming the field."""
        worker = self.register_worker()
        for reason in ("", "x" * 201):
            code, body, _ = self.call(
                "POST",
                f"/workers/{worker}/alive",
                role="worker",
                body={"running": [], "suspended": reason},
            )
            self.assertEqual(code, 400)
            self.assertIn("alive.suspended", body["message"])

    def test_workers_listing_says_how_many_slots_are_busy(self) -> None:
        """Each live worker's row counts its slots holding an attempt."""
        worker = self.register_worker()
        [row] = self.call("GET", "/workers", role="client")[1]["workers"]
        self.assertEqual((row["busy"], row["slots"]), (0, 2))
        self._first_attempt(worker, tasks=1)
        [row] = self.call("GET", "/workers", role="client")[1]["workers"]
        self.assertEqual((row["busy"], row["slots"]), (1, 2))

    def test_lost_workers_come_after_the_live_ones_newest_first(self) -> None:
        """Live workers by name, then the lost ones, the most recently heard first, each with
        its own id: workers stopped under one name read newest to oldest."""
        self.coordinator.startService()
        self.addCleanup(self.coordinator.stopService)
        workers = self.coordinator.workers
        first = self.register_worker()
        self.clock.advance(1)
        second = self.register_worker()
        for _ in range(5):
            self.clock.advance(workers.alive_interval)
        self.assertEqual(workers.workers, {})
        third = self.register_worker()
        rows = self.call("GET", "/workers", role="client")[1]["workers"]
        self.assertEqual(
            [(r["id"], r["state"], r["busy"]) for r in rows],
            [(third, "alive", 0), (second, "lost", None), (first, "lost", None)],
        )

    def _first_attempt(
        self, worker: str, tasks: int, outputs: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A job of ``tasks`` tasks (each with ``outputs``) submitted; the Work Request's one
        assignment."""
        wire = wire_job([{"id": f"t{n}", "outputs": list(outputs)} for n in range(tasks)])
        [assignment] = self._submit_and_ask(worker, wire, free_slots=1)
        return assignment

    def _submit_and_ask(
        self, worker: str, wire: dict[str, Any], free_slots: int
    ) -> list[dict[str, Any]]:
        """``wire`` submitted as a job, then the tasks a Work Request for ``free_slots`` gets."""
        self.call("POST", "/jobs", role="client", body=wire)
        _, work, _ = self.call(
            "POST",
            f"/workers/{worker}/work",
            role="worker",
            body={"performance": 1.0, "free_slots": free_slots},
        )
        return [dict(a) for a in work["tasks"]]

    @staticmethod
    def _result(attempt: str, **extra: Any) -> dict[str, Any]:
        return {
            "attempt": attempt,
            "outcome": "succeeded",
            "exit_code": 0,
            "error": None,
            "outputs": [],
            "stdout": "",
            "stderr": "",
            "duration": 0.1,
            **extra,
        }

    def test_work_result_carrying_a_work_request_is_answered_with_tasks(self) -> None:
        """A result that asks for work is recorded and answered with the next tasks and policy."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=4)
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={
                "results": [self._result(first["attempt"])],
                "work": {"performance": 1.0, "free_slots": 2},
            },
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["results"], [{"accepted": True}])
        self.assertEqual(len(body["tasks"]), 2)
        self.assertNotIn(first["task"], [t["task"] for t in body["tasks"]])
        self.assertIn("packet_size", body["policy"])
        self.assertEqual(self.coordinator.tasks.counts()["done"], 1)
        self.assertEqual(self.coordinator.tasks.counts()["running"], 2)

    def test_several_results_in_one_request_are_each_taken_or_refused(self) -> None:
        """A batch of results: each is answered on its own (one refused does not refuse the
        others), and the work asked for comes with them."""
        worker = self.register_worker()
        wire = wire_job([{"id": f"t{n}"} for n in range(5)])
        first, second = (a["attempt"] for a in self._submit_and_ask(worker, wire, free_slots=2))
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={
                "results": [
                    self._result(first),
                    # Outputs the task never declared: refused, as it would be alone.
                    self._result(
                        second, outputs=[{"name": "stray", "digest": "0" * 64, "size": 1}]
                    ),
                    # An attempt the coordinator does not know: ignored.
                    self._result("a-unknown"),
                ],
                "work": {"performance": 1.0, "free_slots": 2},
            },
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["results"][0], {"accepted": True})
        self.assertEqual(body["results"][1]["error"], "bad_request")
        self.assertIn("stray", body["results"][1]["message"])
        self.assertEqual(body["results"][2], {"accepted": False})
        self.assertEqual(len(body["tasks"]), 2)
        counts = self.coordinator.tasks.counts()
        # The refused attempt still runs, beside the two new ones.
        self.assertEqual((counts["done"], counts["running"]), (1, 3))

    def test_a_batchs_work_includes_the_tasks_its_results_unblocked(self) -> None:
        """The work a batch asks for is assigned without waiting for its results to be stored,
        yet after they are taken: the task a result unblocked comes in the same answer."""
        worker = self.register_worker()
        wire = wire_job([{"id": "first"}, {"id": "then", "after": ["first"]}])
        [first] = self._submit_and_ask(worker, wire, free_slots=2)
        self.assertEqual(first["task"], "first")
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={
                "results": [self._result(first["attempt"])],
                "work": {"performance": 1.0, "free_slots": 1},
            },
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["results"], [{"accepted": True}])
        self.assertEqual([t["task"] for t in body["tasks"]], ["then"])

    def test_small_output_in_the_result_is_downloadable_from_the_coordinator(self) -> None:
        """An output sent with its bytes needs no warehouse; downloads answer with the bytes."""
        worker = self.register_worker()
        assignment = self._first_attempt(worker, tasks=1, outputs=["o"])
        small = b"42\n"
        digest = hashlib.sha256(small).hexdigest()
        output = {"name": "o", "digest": digest, "size": 3, "content": "NDIK"}
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={"results": [self._result(assignment["attempt"], outputs=[output])]},
        )
        self.assertEqual((code, body), (200, {"results": [{"accepted": True}]}))
        code, body, _ = self.call(
            "POST", "/objects/downloads", role="client", body={"digests": [digest]}
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            body["objects"], [{"digest": digest, "size": 3, "sources": [], "content": "NDIK"}]
        )
        code, body, _ = self.call("GET", f"/objects/{digest}", role="client")
        self.assertEqual((code, body["warehouses"], body["inline"]), (200, [], True))
        # Uploaded again (as a program, say: those are read at warehouses only), it is stored.
        code, body, _ = self.call(
            "POST",
            "/objects/uploads",
            role="client",
            body={"objects": [{"digest": digest, "size": 3}]},
        )
        [planned] = body["objects"]
        self.assertEqual((code, planned["present"]), (200, False))
        self.assertIsNotNone(planned["capability"])

    def test_an_inline_output_that_does_not_match_is_refused_and_changes_nothing(self) -> None:
        """Bytes that do not hash to the digest, or too many to travel inline: 400 naming it."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=1)
        big = b"x" * (INLINE_MOST + 1)
        cases = [
            ({"digest": "0" * 64, "size": 3, "content": "NDIK"}, "do not hash"),
            ({"digest": "0" * 64, "size": 2, "content": "NDIK"}, "not the 2 announced"),
            ({"digest": "0" * 64, "size": 3, "content": "not base64!"}, "invalid base64"),
            (
                {
                    "digest": hashlib.sha256(big).hexdigest(),
                    "size": len(big),
                    "content": base64.b64encode(big).decode(),
                },
                f"at most {INLINE_MOST} bytes",
            ),
        ]
        for fields, why in cases:
            output = {"name": "o", **fields}
            code, body, _ = self.call(
                "POST",
                f"/workers/{worker}/results",
                role="worker",
                body={"results": [self._result(first["attempt"], outputs=[output])]},
            )
            self.assertEqual(code, 400, why)
            self.assertIn("report.results[0].outputs[0]", body["message"])
            self.assertIn(why, body["message"])
        self.assertEqual(self.coordinator.tasks.counts().get("done", 0), 0)

    def test_a_malformed_result_in_a_batch_refuses_the_whole_request(self) -> None:
        """One bad entry is a 400 naming it, and none of the batch is taken."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=2)
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={"results": [self._result(first["attempt"]), {"attempt": "a1"}]},
        )
        self.assertEqual(code, 400)
        self.assertIn("results[1]", body["message"])
        self.assertEqual(self.coordinator.tasks.counts().get("done", 0), 0)

    def test_work_result_without_a_work_request_assigns_nothing(self) -> None:
        """A result that asks for no work ("work" absent) gets no tasks handed out."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=3)
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={"results": [self._result(first["attempt"])]},
        )
        self.assertEqual((code, body), (200, {"results": [{"accepted": True}]}))
        self.assertEqual(self.coordinator.tasks.counts().get("running", 0), 0)

    def test_busy_coordinator_takes_the_result_but_assigns_nothing(self) -> None:
        """Past the admission limit, the result is still recorded; its answer has no tasks."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=3)
        self.coordinator.communication.max_work_requests = 0
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={
                "results": [self._result(first["attempt"])],
                "work": {"performance": 1.0, "free_slots": 2},
            },
        )
        self.assertEqual((code, body), (200, {"results": [{"accepted": True}]}))
        self.assertEqual(self.coordinator.tasks.counts()["done"], 1)
        self.assertEqual(self.coordinator.communication.work_requests_refused, 1)

    def test_malformed_work_in_a_result_is_refused_before_the_result_counts(self) -> None:
        """A result with a malformed "work" is a 400 and changes nothing."""
        worker = self.register_worker()
        first = self._first_attempt(worker, tasks=2)
        code, body, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={"results": [self._result(first["attempt"])], "work": {"performance": 1.0}},
        )
        self.assertEqual((code, body["error"]), (400, "bad_request"))
        self.assertIn("report.work.free_slots", body["message"])
        self.assertEqual(self.coordinator.tasks.counts().get("done", 0), 0)

    def test_a_negative_idle_slots_is_refused_naming_it(self) -> None:
        worker = self.register_worker()
        body = {"performance": 1.0, "free_slots": 2, "idle_slots": -1}
        code, answer, _ = self.call("POST", f"/workers/{worker}/work", role="worker", body=body)
        self.assertEqual((code, answer["error"]), (400, "bad_request"))
        self.assertIn("work.idle_slots", answer["message"])
        first = self._first_attempt(worker, tasks=2)
        code, answer, _ = self.call(
            "POST",
            f"/workers/{worker}/results",
            role="worker",
            body={
                "results": [self._result(first["attempt"])],
                "work": {"performance": 1.0, "free_slots": 1, "idle_slots": "x"},
            },
        )
        self.assertEqual((code, answer["error"]), (400, "bad_request"))
        self.assertIn("report.work.idle_slots", answer["message"])
        self.assertEqual(self.coordinator.tasks.counts().get("done", 0), 0)

    def test_object_locations_name_the_warehouses_holding_it(self) -> None:
        """An operator can see which warehouses hold an object, and an unknown one is a 404."""
        from tests.unit.coordinator.harness import BINARY, digest_of

        code, body, _ = self.call("GET", f"/objects/{BINARY}", role="client")
        self.assertEqual(code, 200)
        self.assertEqual([w["url"] for w in body["warehouses"]], ["http://127.0.0.1:9"])
        code, body, _ = self.call("GET", f"/objects/{digest_of('nothing')}", role="client")
        self.assertEqual(code, 404)


class UnrunnableTests(ApiHarness):
    """A ready task no live worker can run says why, in the job's summary and its tasks."""

    def submit_for(self, platform: str) -> str:
        wire = wire_job([{"id": "x"}, {"id": "y"}])
        wire["binaries"] = {
            "prog": {platform: {"digest": BINARY, "size": 6, "bundle": False, "entry": None}}
        }
        return self.submit(wire)

    def test_no_worker_at_all_is_said(self) -> None:
        job = self.submit_for("linux-x86_64")
        _, summary, _ = self.call("GET", f"/jobs/{job}", role="client")
        self.assertEqual(summary["unrunnable"], {"no worker is connected": 2})

    def test_a_program_for_a_platform_no_live_worker_runs_is_said(self) -> None:
        job = self.submit_for("linux-aarch64")
        self.register_worker()  # linux-x86_64
        _, summary, _ = self.call("GET", f"/jobs/{job}", role="client")
        [(why, n)] = summary["unrunnable"].items()
        self.assertEqual(n, 2)
        self.assertIn("'prog' exists for linux-aarch64", why)
        self.assertIn("live workers run linux-x86_64", why)
        _, listed, _ = self.call("GET", f"/jobs/{job}/tasks", role="client")
        self.assertEqual({t["why"] for t in listed["tasks"]}, {why})

    def test_a_task_some_worker_can_run_is_not_explained(self) -> None:
        job = self.submit_for("linux-x86_64")
        self.register_worker()
        _, summary, _ = self.call("GET", f"/jobs/{job}", role="client")
        self.assertEqual(summary["unrunnable"], {})
