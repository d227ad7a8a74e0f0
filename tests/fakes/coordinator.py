"""FakeCoordinator: the coordinator's worker routes (docs/protocol.md) in memory, scripted.

A ``twisted.web`` resource, so it runs behind ``treq.testing.StubTreq`` with no network and no
reactor: a test queues assignments, scripts failures (a busy answer, a lost worker, a
coordinator that does not answer at all) and reads back every Register Request, Work Request,
Work Alive, Work Result, upload plan and giveback it received. Bodies are decoded into the
protocol's own messages and answers written from them, so a worker sending a malformed message
gets the 400 the real coordinator would give; tests/unit/test_worker_routes_contract.py runs
the same cases against both.

    coordinator = FakeCoordinator()
    coordinator.assign(assignment)
    api = coordinator.api()          # an xwch.http.JsonApi talking to it
    coordinator.reachable = False    # every request now fails as Unreachable
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.http import JsonApi
from xwch.protocol import worker as protocol
from xwch.protocol.codec import (
    ProtocolError,
    ProtocolVersionError,
    check_version,
    convert,
    decode_body,
    encode,
)
from xwch.protocol.objects import (
    ObjectRef,
    UploadPlan,
    UploadSlot,
    UploadsRequest,
    WarehouseAddress,
)
from xwch.protocol.wire import API_PREFIX, OUTCOME_SUCCEEDED
from xwch.protocol.worker import (
    AliveAnswer,
    Assignment,
    AttemptResult,
    GiveBack,
    HostFacts,
    Policy,
    Registered,
    ResultAnswer,
    ResultsAnswer,
    ResultsReport,
    WorkAlive,
    WorkAnswer,
)

COORDINATOR_URL = "http://coordinator.test"
WAREHOUSE_URL = "http://warehouse.test"
WORKER_TOKEN = "worker-secret"


@dataclass(frozen=True)
class WorkRequest:
    """A Work Request as received: from which worker, and what it asked for."""

    worker: str
    performance: float
    free_slots: int


@dataclass
class _ScriptedError:
    route: str
    status: int
    code: str
    retry_after: float | None
    times: int


class FakeCoordinator(Resource):
    """The worker-facing half of a coordinator, with every message it received recorded."""

    isLeaf = True

    def __init__(
        self,
        alive_interval: float = 10.0,
        policy: Policy | None = None,
        token: str = WORKER_TOKEN,
    ) -> None:
        super().__init__()
        self.alive_interval = alive_interval
        self.policy = policy or Policy()
        self.token = token
        # False: every request fails to connect (the client sees Unreachable).
        self.reachable = True
        # False: Work Results carrying a Work Request are answered without "tasks", as a busy
        # coordinator answers them.
        self.work_in_results = True
        # True: a Work Request asking to wait ("wait") that finds nothing ready is held open
        # until assign() queues work or release_held() answers it with nothing.
        self.holds_work = False
        # The Work Requests held open, with what each asked for; and what each asked to wait.
        self.held: list[tuple[Request, WorkRequest]] = []
        self.waits: list[float | None] = []

        # Scripted state.
        self.ready: list[Assignment] = []
        self.stored: set[str] = set()
        self.to_cancel: set[str] = set()
        self.workers: dict[str, HostFacts] = {}
        self.assigned: dict[str, str] = {}

        # What was received, in order.
        self.registrations: list[HostFacts] = []
        self.work_requests: list[WorkRequest] = []
        # The Work Requests carried by Work Results ("work"), answered in the same reply.
        self.result_work_requests: list[WorkRequest] = []
        # What each of those requests (both kinds, in order) said of its idle slots.
        self.idle_slots: list[int | None] = []
        self.alives: list[tuple[str, list[str]]] = []
        # Each Work Alive's whole body (states of the attempts, evicted objects...).
        self.alive_bodies: list[tuple[str, dict[str, Any]]] = []
        self.results: list[tuple[str, AttemptResult]] = []
        # How many results each batched Work Result carried.
        self.result_batches: list[int] = []
        self.givebacks: list[tuple[str, list[str]]] = []
        self.upload_plans: list[list[ObjectRef]] = []
        # The site each upload plan was asked for (None: not said).
        self.upload_sites: list[str | None] = []
        # What GET /warehouses lists.
        self.warehouse_list: list[dict[str, str]] = []
        # Every request as (route, status answered).
        self.requests: list[tuple[str, int]] = []

        self._errors: list[_ScriptedError] = []
        self._next_worker = 1
        # How to deliver answers written after a request was rendered (each client's flush).
        self._flushes: list[Callable[[], None]] = []

    # Scripting

    def assign(self, *assignments: Assignment) -> None:
        """Queue assignments; Work Requests hand them out, as many as the free slots (those
        held open first, at once)."""
        self.ready.extend(assignments)
        while self.held and self.ready:
            request, asked = self.held.pop(0)
            self._answer_held(request, self._hand_out(asked))

    def release_held(self) -> None:
        """Answer every held Work Request with nothing, as when its wait is over."""
        held, self.held = self.held, []
        for request, _ in held:
            self._answer_held(request, WorkAnswer(tasks=(), policy=self.policy))

    def _answer_held(self, request: Request, body: WorkAnswer) -> None:
        self.requests.append(("work", 200))
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.write(encode(body))
        request.finish()
        for flush in self._flushes:
            flush()

    def cancel(self, attempt_id: str) -> None:
        """The next Work Alive that lists this attempt tells the worker to kill it."""
        self.to_cancel.add(attempt_id)

    def declare_lost(self, worker_id: str) -> None:
        """Forget a worker: its next call gets 404 unknown_worker, its attempts are stale."""
        del self.workers[worker_id]

    def fail_next(
        self,
        route: str,
        status: int = 503,
        code: str = "busy",
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls to ``route`` with an error.

        Routes: register, work, alive, results, giveback, uploads.
        """
        self._errors.append(_ScriptedError(route, status, code, retry_after, times))

    def client(self) -> FakeCoordinatorClient:
        """A treq-like HTTP client reaching this coordinator in memory."""
        return FakeCoordinatorClient(self)

    def api(self, token: str | None = None) -> JsonApi:
        """An ``xwch.http.JsonApi`` for this coordinator."""
        return JsonApi(self.client(), COORDINATOR_URL, self.token if token is None else token)

    def routes(self) -> list[str]:
        """The route of every request answered, in order (``"work"``, ``"alive"`` ...)."""
        return [route for route, _ in self.requests]

    # twisted.web

    def render_POST(self, request: Request) -> bytes | int:
        path = request.path.decode()
        route, worker = _route(path)
        try:
            status, body, headers = self._answer(request, route, worker)
        except _Hold as hold:
            self.held.append((request, hold.asked))
            return NOT_DONE_YET
        self.requests.append((route, status))
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return encode(body)

    def render_GET(self, request: Request) -> bytes:
        route, _ = _route(request.path.decode())
        self.requests.append((route, 200))
        request.setHeader(b"content-type", b"application/json")
        if route != "warehouses":
            request.setResponseCode(404)
            return json.dumps({"error": "not_found", "message": route}).encode()
        return json.dumps({"warehouses": self.warehouse_list}).encode()

    def _answer(
        self, request: Request, route: str, worker: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        auth = request.getHeader(b"authorization")
        if auth != f"Bearer {self.token}".encode():
            return 401, {"error": "unauthorized", "message": "unknown token"}, {}
        scripted = self._scripted(route)
        if scripted is not None:
            body: dict[str, Any] = {"error": scripted.code, "message": f"scripted {scripted.code}"}
            headers = {}
            if scripted.retry_after is not None:
                body["retry_after"] = scripted.retry_after
                headers["Retry-After"] = str(scripted.retry_after)
            return scripted.status, body, headers
        if route == "unknown":
            return 404, {"error": "not_found", "message": "no such route"}, {}
        if worker is not None and worker not in self.workers:
            return 404, {"error": "unknown_worker", "message": f"worker {worker} unknown"}, {}
        raw = request.content.read() if request.content else b""
        try:
            message = decode_body(raw, ROUTE_MESSAGES[route])
            return 200, *self._handle(route, worker, message, raw)
        except ProtocolVersionError as e:
            return 400, {"error": "protocol_version", "message": str(e)}, {}
        except ProtocolError as e:
            return 400, {"error": "bad_request", "message": str(e)}, {}
        except _Refused as e:
            return e.status, e.body, {}

    def _scripted(self, route: str) -> _ScriptedError | None:
        for scripted in self._errors:
            if scripted.route == route and scripted.times > 0:
                scripted.times -= 1
                return scripted
        return None

    def _handle(
        self, route: str, worker: str | None, message: Any, raw: bytes
    ) -> tuple[Any, dict[str, str]]:
        if route == "register":
            facts: HostFacts = message
            check_version(facts.protocol, "worker")
            worker_id = f"w{self._next_worker}"
            self._next_worker += 1
            self.workers[worker_id] = facts
            self.registrations.append(facts)
            # 201 in the real thing; JsonApi reads both alike.
            registered = Registered(
                worker_id=worker_id, alive_interval=self.alive_interval, policy=self.policy
            )
            return registered, {}
        assert worker is not None or route == "uploads"
        if route == "work":
            assert worker is not None
            asked: protocol.WorkRequest = message
            request = WorkRequest(worker, asked.performance, asked.free_slots)
            self.idle_slots.append(asked.idle_slots)
            self.waits.append(asked.wait or None)
            if self.holds_work and asked.wait and not self.ready:
                self.work_requests.append(request)
                raise _Hold(request)
            self.work_requests.append(request)
            return self._hand_out(request), {}
        if route == "alive":
            alive: WorkAlive = message
            ids = [r.attempt for r in alive.running]
            assert worker is not None
            self.alives.append((worker, ids))
            self.alive_bodies.append((worker, json.loads(raw)))
            cancel = [a for a in ids if a in self.to_cancel or self.assigned.get(a) != worker]
            self.to_cancel -= set(cancel)
            return AliveAnswer(cancel=tuple(cancel), policy=self.policy), {}
        if route == "results":
            assert worker is not None
            report: ResultsReport = message
            answers = []
            for result in report.results:
                try:
                    self._take_result(worker, result)
                    answers.append(ResultAnswer(accepted=True))
                except _Refused as e:
                    answers.append(convert(e.body, ResultAnswer, "refusal"))
            self.result_batches.append(len(answers))
            if report.work is None or not self.work_in_results:
                return ResultsAnswer(results=tuple(answers)), {}
            request = WorkRequest(worker, report.work.performance, report.work.free_slots)
            self.idle_slots.append(report.work.idle_slots)
            self.result_work_requests.append(request)
            work = self._hand_out(request)
            return ResultsAnswer(results=tuple(answers), tasks=work.tasks, policy=work.policy), {}
        if route == "giveback":
            given_back: GiveBack = message
            assert worker is not None
            self.givebacks.append((worker, list(given_back.attempts)))
            for a in given_back.attempts:
                self.assigned.pop(a, None)
            return {}, {}
        if route == "uploads":
            uploads: UploadsRequest = message
            self.upload_plans.append(list(uploads.objects))
            self.upload_sites.append(uploads.site)
            return UploadPlan(
                warehouse=WarehouseAddress(id="h1", url=WAREHOUSE_URL),
                objects=tuple(
                    UploadSlot(
                        digest=r.digest,
                        present=r.digest in self.stored,
                        capability=None if r.digest in self.stored else f"put:{r.digest}",
                    )
                    for r in uploads.objects
                ),
            ), {}
        raise AssertionError(route)

    def _take_result(self, worker: str, result: AttemptResult) -> None:
        if self.assigned.get(result.attempt) != worker:
            raise _Refused(403, {"error": "forbidden", "message": "not your attempt"})
        # As the real one: outputs carried inline need no warehouse.
        missing = [
            o.digest for o in result.outputs if o.content is None and o.digest not in self.stored
        ]
        if result.outcome == OUTCOME_SUCCEEDED and missing:
            raise _Refused(
                409, {"error": "missing_objects", "message": "store first", "digests": missing}
            )
        self.results.append((worker, result))
        del self.assigned[result.attempt]

    def _hand_out(self, request: WorkRequest) -> WorkAnswer:
        """A Work Request's answer: as many queued assignments as free slots, and the policy."""
        free = request.free_slots
        given, self.ready = self.ready[:free], self.ready[free:]
        for a in given:
            self.assigned[a.attempt] = request.worker
        return WorkAnswer(tasks=tuple(given), policy=self.policy)


# What each route's body is, as the real coordinator's routes declare it.
ROUTE_MESSAGES: dict[str, type[Any]] = {
    "register": HostFacts,
    "work": protocol.WorkRequest,
    "alive": WorkAlive,
    "results": ResultsReport,
    "giveback": GiveBack,
    "uploads": UploadsRequest,
    "unknown": dict,
}


class _Hold(Exception):
    """This Work Request waits for work."""

    def __init__(self, asked: WorkRequest) -> None:
        self.asked = asked


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def _route(path: str) -> tuple[str, str | None]:
    """The route name and the worker id of a request path."""
    if not path.startswith(API_PREFIX + "/"):
        return "unknown", None
    parts = path[len(API_PREFIX) + 1 :].split("/")
    if parts == ["workers"]:
        return "register", None
    if parts == ["objects", "uploads"]:
        return "uploads", None
    if parts == ["warehouses"]:
        return "warehouses", None
    if len(parts) == 3 and parts[0] == "workers":
        if parts[2] in ("work", "alive", "results", "giveback"):
            return parts[2], parts[1]
    return "unknown", None


class FakeCoordinatorClient:
    """A treq ``HTTPClient`` look-alike over :class:`FakeCoordinator`, fully in memory."""

    def __init__(self, coordinator: FakeCoordinator) -> None:
        self._coordinator = coordinator
        self._stub = StubTreq(coordinator)
        coordinator._flushes.append(self._stub.flush)

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        if not self._coordinator.reachable:
            return fail(ConnectionRefusedError("the fake coordinator is down"))
        d: Deferred[Any] = self._stub.request(method, url, **kwargs)
        self._stub.flush()
        return d
