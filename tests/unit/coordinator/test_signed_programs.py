"""Signed programs on the coordinator: checked at submission, offered only to workers that
accept them, and a task no live worker accepts explained."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import Deferred

from tests.unit.coordinator.harness import BINARY, wire_job
from tests.unit.coordinator.test_api import ApiHarness
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import HostFacts
from xwch.signing import format_public_key, sign_program
from xwch.store import tokens

KEY = Ed25519PrivateKey.generate()
PUBLIC = format_public_key(KEY.public_key())


def signed(wire: dict[str, Any], key: Ed25519PrivateKey = KEY, job: str | None = None) -> None:
    """Sign the program of ``wire`` in place (for the job named ``job``, default its own)."""
    signature = sign_program(key, BINARY, "prog", job or wire["name"])
    wire["binaries"]["prog"]["any"]["signature"] = {
        "key": signature.key,
        "signature": signature.signature,
    }


class SignedProgramsTests(ApiHarness):
    def register(self, *trusted: str, name: str = "h") -> str:  # type: ignore[override]
        facts = HostFacts(
            name,
            "127.0.0.1",
            "linux-x86_64",
            2,
            1,
            2,
            1.0,
            protocol=PROTOCOL_VERSION,
            trusted_keys=trusted,
        )
        code, reg, _ = self.call("POST", "/workers", role="worker", body=facts.to_json())
        self.assertEqual(code, 201, reg)
        return str(reg["worker_id"])

    def work(self, worker: str) -> list[dict[str, Any]]:
        code, answer, _ = self.call(
            "POST",
            f"/workers/{worker}/work",
            role="worker",
            body={"performance": 1.0, "free_slots": 2},
        )
        self.assertEqual(code, 200, answer)
        return list(answer["tasks"])

    def submit_api(self, wire: dict[str, Any]) -> tuple[int, Any]:
        code, body, _ = self.call("POST", "/jobs", role="client", body=wire)
        return code, body

    def test_a_trusting_worker_gets_only_programs_signed_by_its_keys(self) -> None:
        """Unsigned work goes to the worker trusting nothing; the signed one to the other, with
        its signature and job name in the assignment for the worker's own check."""
        trusting = self.register(PUBLIC, name="careful")
        anyone = self.register(name="easy")
        unsigned = wire_job([{"id": "u"}], name="plain")
        code, _ = self.submit_api(unsigned)
        self.assertEqual(code, 201)
        self.assertEqual(self.work(trusting), [])
        [given] = self.work(anyone)
        self.assertEqual(given["task"], "u")
        self.assertIsNone(given["binary"]["signed"])
        sig = wire_job([{"id": "s"}], name="signed-job")
        signed(sig)
        self.assertEqual(self.submit_api(sig)[0], 201)
        [given] = self.work(trusting)
        self.assertEqual(given["task"], "s")
        self.assertEqual(given["binary"]["signed"]["key"], PUBLIC)
        self.assertEqual(given["binary"]["job_name"], "signed-job")

    def test_unsigned_work_no_live_worker_accepts_is_explained(self) -> None:
        self.register(PUBLIC)
        code, created = self.submit_api(wire_job([{"id": "x"}, {"id": "y"}]))
        self.assertEqual(code, 201)
        job = created["id"]
        _, summary, _ = self.call("GET", f"/jobs/{job}", role="client")
        self.assertEqual(summary["unrunnable"], {"no live worker accepts an unsigned program": 2})
        _, listed, _ = self.call("GET", f"/jobs/{job}/tasks", role="client")
        self.assertEqual(
            {t["why"] for t in listed["tasks"]}, {"no live worker accepts an unsigned program"}
        )

    def test_work_signed_by_a_key_no_live_worker_trusts_is_explained(self) -> None:
        self.register(PUBLIC)
        stranger = Ed25519PrivateKey.generate()
        wire = wire_job([{"id": "x"}])
        signed(wire, key=stranger)
        code, created = self.submit_api(wire)
        self.assertEqual(code, 201)
        _, summary, _ = self.call("GET", f"/jobs/{created['id']}", role="client")
        [(why, n)] = summary["unrunnable"].items()
        self.assertEqual(n, 1)
        self.assertIn(format_public_key(stranger.public_key()), why)
        self.assertIn("no live worker trusts", why)

    def test_a_worker_trusting_nothing_takes_signed_work_too(self) -> None:
        anyone = self.register()
        wire = wire_job([{"id": "x"}])
        signed(wire)
        self.assertEqual(self.submit_api(wire)[0], 201)
        self.assertEqual([t["task"] for t in self.work(anyone)], ["x"])

    def test_a_replayed_signature_is_refused_with_the_job(self) -> None:
        """A signature made for another job's program is refused at submission, clearly."""
        wire = wire_job([{"id": "x"}], name="mine")
        signed(wire, job="theirs")
        code, body = self.submit_api(wire)
        self.assertEqual(code, 400)
        self.assertIn('binaries["prog"]["any"].signature', body["message"])
        self.assertIn("does not verify", body["message"])
        _, jobs, _ = self.call("GET", "/jobs", role="client")
        self.assertEqual(jobs["jobs"], [])

    def test_forged_truncated_or_wrong_type_signatures_are_refused(self) -> None:
        good = sign_program(KEY, BINARY, "prog", "test")
        raw = base64.b64decode(good.signature)
        cases = {
            "forged": (PUBLIC, base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode()),
            "truncated": (PUBLIC, base64.b64encode(raw[:32]).decode()),
            "wrong type": ("rsa:" + PUBLIC.split(":")[1], good.signature),
            "not base64": (PUBLIC, "%%%"),
        }
        for case, (key, signature) in cases.items():
            wire = wire_job([{"id": "x"}])
            wire["binaries"]["prog"]["any"]["signature"] = {"key": key, "signature": signature}
            code, body = self.submit_api(wire)
            self.assertEqual(code, 400, case)
            self.assertIn("signature", body["message"], case)
        wire = wire_job([{"id": "x"}])
        wire["binaries"]["prog"]["any"]["signature"] = "just a string"
        self.assertEqual(self.submit_api(wire)[0], 400)
        _, jobs, _ = self.call("GET", "/jobs", role="client")
        self.assertEqual(jobs["jobs"], [])

    def test_a_register_request_with_a_malformed_key_is_refused(self) -> None:
        for bad in ("rsa:AAAA", "ed25519:AAAA", 7):
            body = HostFacts("h", "127.0.0.1", "linux-x86_64", 2, 1, 2, 1.0).to_json()
            body["trusted_keys"] = [bad]
            code, answer, _ = self.call("POST", "/workers", role="worker", body=body)
            self.assertEqual(code, 400, bad)
            self.assertIn("trusted_keys", answer["message"])

    def test_what_a_worker_trusts_outlives_its_coordinator(self) -> None:
        """A coordinator started again on the store (or another member taking over) knows what
        each live worker trusts, and offers it no work it would refuse."""
        trusting = self.register(PUBLIC, name="careful")
        restarted = self.build()
        self.assertEqual(restarted.workers.trusted.get(trusting), frozenset({PUBLIC}))
        self.successResultOf(
            Deferred.fromCoroutine(
                restarted.tasks.submit(wire_job([{"id": "u"}], name="plain"), owner=self.client.id)
            )
        )
        with self.db.engine.begin() as conn:
            token = tokens.find_token_thd(conn, self.secrets["worker"])
        assert token is not None
        given = self.successResultOf(
            Deferred.fromCoroutine(restarted.workers.work_request(token, trusting, 1.0, 2))
        )
        self.assertEqual(given, [])
