"""The dashboard and /metrics as the coordinator serves them (in memory, on a Clock)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq

from tests.unit.coordinator.harness import CoordinatorTestCase, wire_job
from xwch.coordinator.auth import Authenticator
from xwch.dashboard.logins import LoginDesk
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import HostFacts
from xwch.store import tokens


class ServedTests(CoordinatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        self.secrets = {}
        for role in ("client", "worker", "metrics"):
            with self.db.engine.begin() as conn:
                self.secrets[role] = tokens.create_token_thd(conn, role, role, 0.0)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, bytes, Any]:
        data = None if body is None else json.dumps(body).encode()
        d = self.http.request(
            method,
            "http://coordinator" + path,
            headers=headers or {},
            data=data,
            allow_redirects=False,
        )
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        self.http.flush()
        return response.code, content, response.headers

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.secrets[role]}

    def login_path(self) -> str:
        code, body, _ = self.request("POST", "/api/v1/dashboard/logins", self.bearer("client"))
        self.assertEqual(code, 201)
        return str(json.loads(body)["path"])

    def session(self) -> dict[str, str]:
        code, _, headers = self.request("GET", self.login_path())
        self.assertEqual(code, 303)
        cookie = headers.getRawHeaders(b"set-cookie")[0].decode()
        return {"Cookie": cookie.split(";")[0]}

    def test_a_login_link_sets_a_strict_httponly_cookie_once(self) -> None:
        """Opening the link sets the session cookie (HttpOnly, SameSite=Strict) and redirects
        to the dashboard, away from the code; the same link then is refused."""
        path = self.login_path()
        code, _, headers = self.request("GET", path)
        self.assertEqual(code, 303)
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/dashboard/"])
        [cookie] = headers.getRawHeaders(b"set-cookie")
        for flag in (b"HttpOnly", b"SameSite=strict", b"Path=/dashboard"):
            self.assertIn(flag.lower(), cookie.lower())
        code, body, _ = self.request("GET", path)
        self.assertEqual(code, 403)
        self.assertIn(b"used or expired", body)

    def test_a_login_link_expires(self) -> None:
        path = self.login_path()
        self.clock.advance(LoginDesk.CODE_LIFETIME + 1)
        code, _, _ = self.request("GET", path)
        self.assertEqual(code, 403)

    def test_only_client_tokens_get_login_links(self) -> None:
        for role in ("worker", "metrics"):
            code, _, _ = self.request("POST", "/api/v1/dashboard/logins", self.bearer(role))
            self.assertEqual(code, 403)

    def test_pages_need_a_session_and_only_read(self) -> None:
        code, _, headers = self.request("GET", "/dashboard/")
        self.assertEqual(code, 401)
        policy = headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"script-src 'self'", policy)
        self.assertEqual(headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        code, _, _ = self.request("POST", "/dashboard/", self.session())
        self.assertEqual(code, 405)

    def test_revoking_the_token_ends_its_sessions(self) -> None:
        """A session lasts only as long as the client token that opened it: once the token is
        revoked (from another process, straight in the store), the session's pages and event
        stream are refused within the time a token is remembered; another token's session
        goes on."""
        cookie = self.session()
        with self.db.engine.begin() as conn:
            other = tokens.create_token_thd(conn, "client", "bob", 0.0)
        code, body, _ = self.request(
            "POST", "/api/v1/dashboard/logins", {"Authorization": "Bearer " + other}
        )
        code, _, headers = self.request("GET", json.loads(body)["path"])
        bobs = {"Cookie": headers.getRawHeaders(b"set-cookie")[0].decode().split(";")[0]}
        code, _, _ = self.request("GET", "/dashboard/", cookie)
        self.assertEqual(code, 200)
        with self.db.engine.begin() as conn:
            self.assertTrue(tokens.revoke_token_thd(conn, None, self.secrets["client"]))
        self.clock.advance(Authenticator.REMEMBER + 0.1)
        for path in ("/dashboard/", "/dashboard/workers?fragment=1", "/dashboard/events"):
            code, body, _ = self.request("GET", path, cookie)
            self.assertEqual(code, 401, path)
            self.assertIn(b"revoked", body)
        code, _, _ = self.request("GET", "/dashboard/", bobs)
        self.assertEqual(code, 200)

    def test_pages_show_jobs_and_tasks_without_the_token(self) -> None:
        """The jobs page and a job's page show the job; no page holds the client's token."""
        job = self.submit(wire_job([{"id": "a"}, {"id": "b", "after": ["a"]}], name="shown"))
        cookie = self.session()
        code, body, _ = self.request("GET", "/dashboard/", cookie)
        self.assertEqual(code, 200)
        self.assertIn(b"shown", body)
        self.assertIn(b"0/2 tasks done", body)
        code, body, _ = self.request("GET", f"/dashboard/jobs/{job}", cookie)
        self.assertEqual(code, 200)
        self.assertEqual(body.count(b'class="node s-'), 2)
        code, fragment, _ = self.request("GET", f"/dashboard/jobs/{job}?fragment=1", cookie)
        self.assertEqual(code, 200)
        self.assertFalse(fragment.startswith(b"<!DOCTYPE"))
        for secret in self.secrets.values():
            self.assertNotIn(secret.encode(), body)
        code, _, _ = self.request("GET", "/dashboard/jobs/nope", cookie)
        self.assertEqual(code, 404)
        for page in ("workers", "platform", "network"):
            code, _, _ = self.request("GET", f"/dashboard/{page}", cookie)
            self.assertEqual(code, 200, page)

    def test_the_static_files_are_served_by_the_coordinator(self) -> None:
        for name in ("dashboard.js", "dashboard.css"):
            code, body, _ = self.request("GET", f"/dashboard/static/{name}")
            self.assertEqual(code, 200)
            self.assertTrue(body)
            self.assertNotIn(b"http://", body)
            self.assertNotIn(b"https://", body)

    def test_metrics_count_what_workers_did(self) -> None:
        """/metrics, read back by prometheus_client's parser: tasks by state, attempts started
        by Work Requests, workers and slots; a metrics token may read it, a worker's may not."""
        self.submit(wire_job([{"id": "a"}, {"id": "b"}]))
        facts = HostFacts("h", "127.0.0.1", "linux-x86_64", 2, 1, 2, 1.0, protocol=PROTOCOL_VERSION)
        code, body, _ = self.request(
            "POST", "/api/v1/workers", self.bearer("worker"), facts.to_json()
        )
        worker = json.loads(body)["worker_id"]
        code, body, _ = self.request(
            "POST",
            f"/api/v1/workers/{worker}/work",
            self.bearer("worker"),
            {"performance": 1.0, "free_slots": 2},
        )
        self.assertEqual(len(json.loads(body)["tasks"]), 2)
        code, body, headers = self.request("GET", "/metrics", self.bearer("metrics"))
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", headers.getRawHeaders(b"content-type")[0])
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        self.assertTrue(all(name.startswith("xwch_") for name in families))
        value = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        self.assertEqual(value[("xwch_tasks", (("state", "running"),))], 2)
        self.assertEqual(value[("xwch_jobs", (("state", "running"),))], 1)
        self.assertEqual(value[("xwch_attempts_started_total", ())], 2)
        self.assertEqual(value[("xwch_workers", (("state", "busy"),))], 1)
        self.assertEqual(value[("xwch_slots", (("state", "busy"),))], 2)
        self.assertEqual(value[("xwch_work_request_seconds_count", ())], 1)
        # Inline here (no group commits): the integration test sees it count.
        self.assertIn(("xwch_store_commit_seconds_count", ()), value)
        code, _, _ = self.request("GET", "/metrics", self.bearer("client"))
        self.assertEqual(code, 200)
        code, _, _ = self.request("GET", "/metrics", self.bearer("worker"))
        self.assertEqual(code, 403)
        code, _, _ = self.request("GET", "/metrics")
        self.assertEqual(code, 401)
