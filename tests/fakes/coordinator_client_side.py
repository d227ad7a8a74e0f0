"""A fake coordinator: the client routes of docs/protocol.md, in memory, plus its warehouse.

``FakeCoordinator.resource()`` is a twisted.web resource to serve through
``treq.testing.StubTreq``; ``in_memory_transfers(fake)`` uploads to and downloads from the fake's
object store instead of a real warehouse (hashing and bundles are the real ones). A job's
progress is scripted: each ``GET /jobs/{job}`` moves it to its next :class:`Step`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.web.resource import Resource
from twisted.web.server import Request

from xwch.bundle import pack_bundle
from xwch.client.transfers import Transfers
from xwch.protocol.client import DashboardLogin, JobCreated, JobList, JobSummary
from xwch.protocol.cluster import CoordinatorInfo, CoordinatorList
from xwch.protocol.codec import ProtocolError, convert, encode
from xwch.protocol.objects import (
    DownloadsAnswer,
    DownloadsRequest,
    ObjectSources,
    Source,
    UploadPlan,
    UploadSlot,
    UploadsRequest,
    WarehouseAddress,
)
from xwch.protocol.worker import Policy
from xwch.transfer.digest import sha256_file

CLIENT_TOKEN = "client-token"
WORKER_TOKEN = "worker-token"
COORDINATOR_URL = "http://coordinator.test"
WAREHOUSE_URL = "http://warehouse.test"


@dataclass(frozen=True)
class Step:
    """One state of a job's scripted progress."""

    state: str
    counts: Mapping[str, int]
    message: str | None = None


@dataclass
class FakeJob:
    id: str
    name: str
    wire: dict[str, Any]
    created: float
    total: int
    state: str = "running"
    counts: dict[str, int] = field(default_factory=dict)
    message: str | None = None
    ended: float | None = None
    script: list[Step] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # Changes made one at a time, each before answering a request for logs (time passing).
    log_script: list[Callable[[], None]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> JobSummary:
        return JobSummary(
            id=self.id,
            name=self.name,
            state=self.state,
            priority=self.wire.get("priority", 0),
            created=self.created,
            ended=self.ended,
            total=self.total,
            counts=dict(self.counts),
            message=self.message,
        )

    def advance(self) -> None:
        if self.script:
            step = self.script.pop(0)
            self.state, self.counts, self.message = step.state, dict(step.counts), step.message
            if self.state != "running" and self.ended is None:
                self.ended = self.created + 60


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": code, "message": message, **extra}


class FakeCoordinator:
    """Jobs, workers and stored objects in memory; every request is recorded."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.jobs: dict[str, FakeJob] = {}
        self.workers: list[dict[str, Any]] = []
        self.coordinators: list[CoordinatorInfo] = []
        self.objects: dict[str, bytes] = {}  # what "some warehouse" holds
        self.requests: list[tuple[str, str]] = []
        self.uploaded: list[str] = []  # digests received by the fake warehouse
        self.downloaded: list[str] = []
        # Given to the next job created: its progress, its tasks' states, its results.
        self.next_script: list[Step] = []
        self.next_task_states: dict[str, str] = {}
        self.next_results: list[tuple[str, str, bytes]] = []
        self.inline: set[str] = set()  # digests kept by the coordinator (see keep_inline)
        self.forget_once: set[str] = set()  # digests to "lose" before the next job creation
        self.refuse_next_job: HttpError | None = None  # the answer to the next POST /jobs
        self.broken: HttpError | None = None  # when set, every request answers this error
        self.login_codes = 0  # dashboard login links handed out

    # -- Test helpers

    def add_job(self, name: str = "demo", script: Sequence[Step] = (), total: int = 2) -> FakeJob:
        job_id = f"job-{len(self.jobs) + 1}"
        job = FakeJob(
            id=job_id,
            name=name,
            wire={"name": name},
            created=self.now - 120,
            total=total,
            counts={"ready": total},
            script=list(script),
        )
        self.jobs[job_id] = job
        return job

    def store(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.objects[digest] = data
        return digest

    def keep_inline(self, data: bytes) -> str:
        """An object the coordinator keeps itself: downloads answer with its bytes."""
        digest = self.store(data)
        self.inline.add(digest)
        return digest

    def resource(self) -> Resource:
        return _Api(self)

    # -- Routes

    def handle(self, method: str, path: str, query: Mapping[str, list[str]], body: Any) -> Any:
        if self.broken is not None:
            raise self.broken
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] != ["api", "v1"]:
            raise HttpError(404, "not_found", f"no route {path}")
        route = parts[2:]
        match (method, route):
            case ("POST", ["objects", "uploads"]):
                return self._uploads(convert(body, UploadsRequest, "uploads"))
            case ("POST", ["objects", "downloads"]):
                return self._downloads(convert(body, DownloadsRequest, "downloads"))
            case ("POST", ["jobs"]):
                return self._create(body)
            case ("GET", ["jobs"]):
                return JobList(jobs=tuple(j.summary() for j in reversed(self.jobs.values())))
            case ("GET", ["jobs", job_id]):
                job = self._job(job_id)
                job.advance()
                return job.summary()
            case ("GET", ["jobs", job_id, "tasks"]):
                return {"tasks": self._job(job_id).tasks}
            case ("GET", ["jobs", job_id, "tasks", task, "logs"]):
                job = self._job(job_id)
                if job.log_script:
                    job.log_script.pop(0)()
                return self._logs(job, task, query)
            case ("POST", ["jobs", job_id, "cancel"]):
                job = self._job(job_id)
                if job.state == "running":
                    job.state, job.ended = "cancelled", self.now
                return job.summary()
            case ("POST", ["jobs", job_id, "retry"]):
                job = self._job(job_id)
                if job.state in ("running", "done"):
                    raise HttpError(409, "job_running", f"job {job_id} is {job.state}")
                job.state, job.ended = "running", None
                return job.summary()
            case ("GET", ["jobs", job_id, "results"]):
                return {"results": self._job(job_id).results}
            case ("GET", ["workers"]):
                return {"workers": self.workers}
            case ("GET", ["coordinators"]):
                return CoordinatorList(coordinators=tuple(self.coordinators))
            case ("POST", ["dashboard", "logins"]):
                self.login_codes += 1
                code = f"code{self.login_codes}"
                return DashboardLogin(path=f"/dashboard/login?code={code}", expires_in=300.0)
        raise HttpError(404, "not_found", f"no route {method} {path}")

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise HttpError(404, "not_found", f"no job {job_id}")
        return self.jobs[job_id]

    def _uploads(self, asked: UploadsRequest) -> UploadPlan:
        return UploadPlan(
            warehouse=WarehouseAddress(id="wh-1", url=WAREHOUSE_URL),
            objects=tuple(
                UploadSlot(
                    digest=o.digest,
                    present=o.digest in self.objects,
                    capability=None if o.digest in self.objects else "put:" + o.digest,
                )
                for o in asked.objects
            ),
        )

    def _downloads(self, asked: DownloadsRequest) -> DownloadsAnswer:
        missing = [d for d in asked.digests if d not in self.objects]
        if missing:
            raise HttpError(404, "not_found", "not stored", digests=missing)
        return DownloadsAnswer(objects=tuple(self._download(d) for d in asked.digests))

    def _download(self, digest: str) -> ObjectSources:
        data = self.objects[digest]
        if digest in self.inline:
            return ObjectSources(digest=digest, size=len(data), sources=(), content=data)
        return ObjectSources(
            digest=digest,
            size=len(data),
            sources=(Source(url=WAREHOUSE_URL, capability="get:" + digest),),
        )

    def _create(self, wire: Any) -> Any:
        refusal, self.refuse_next_job = self.refuse_next_job, None
        if refusal is not None:
            raise refusal
        for digest in self.forget_once:
            self.objects.pop(digest, None)
        self.forget_once = set()
        digests = [v["digest"] for b in wire["binaries"].values() for v in b.values()]
        digests += [f["digest"] for f in wire["files"].values()]
        missing = sorted({d for d in digests if d not in self.objects})
        if missing:
            raise HttpError(409, "missing_objects", "objects not stored", digests=missing)
        job = self.add_job(wire["name"], self.next_script, total=len(wire["tasks"]))
        job.wire = wire
        job.tasks = [
            {
                "id": t["id"],
                "state": self.next_task_states.get(t["id"], "ready"),
                "cost": t["cost"],
                "worker": None,
                "attempts": 0,
                "started": None,
                "ended": None,
            }
            for t in wire["tasks"]
        ]
        job.results = [
            {"task": task, "output": output, "digest": self.store(data), "size": len(data)}
            for task, output, data in self.next_results
        ]
        self.next_script, self.next_task_states, self.next_results = [], {}, []
        return 201, JobCreated(id=job.id)

    def _logs(self, job: FakeJob, task: str, query: Mapping[str, list[str]]) -> Any:
        attempts = sorted(n for t, n in job.logs if t == task)
        if not attempts:
            raise HttpError(404, "not_found", f"job {job.id} has no task {task}")
        number = int(query["attempt"][0]) if "attempt" in query else attempts[-1]
        if (task, number) not in job.logs:
            raise HttpError(404, "not_found", f"task {task} has no attempt {number} yet")
        return job.logs[(task, number)]


class _Api(Resource):
    isLeaf = True

    def __init__(self, fake: FakeCoordinator) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: Request) -> bytes:
        method = request.method.decode()
        url = urlsplit(request.uri.decode())
        self.fake.requests.append((method, url.path))
        auth = request.getHeader("authorization") or ""
        request.setHeader("content-type", "application/json")
        try:
            if auth == f"Bearer {WORKER_TOKEN}":
                raise HttpError(403, "forbidden", "forbidden")
            if auth != f"Bearer {CLIENT_TOKEN}":
                raise HttpError(401, "unauthorized", "unauthorized")
            raw = request.content.read() if request.content else b""
            body = json.loads(raw) if raw else None
            answer = self.fake.handle(method, url.path, parse_qs(url.query), body)
            status = 200
            if isinstance(answer, tuple):
                status, answer = answer
        except ProtocolError as e:
            # As the real one: a body that does not fit its message is a 400 naming the field.
            status, answer = 400, {"error": "bad_request", "message": str(e)}
        except HttpError as e:
            status, answer = e.status, e.body
        request.setResponseCode(status)
        return encode(answer)


def in_memory_transfers(fake: FakeCoordinator) -> Transfers:
    """Transfers whose warehouse is ``fake.objects``; hashing and bundles are the real ones."""

    async def upload_file(
        http: Any,
        url: str,
        digest: str,
        size: int,
        path: Path,
        capability: str,
        pacer: Any,
        reactor: Any,
    ) -> None:
        assert url == WAREHOUSE_URL and capability == "put:" + digest
        data = path.read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (digest, size)
        fake.objects[digest] = data
        fake.uploaded.append(digest)

    async def download_object(
        http: Any,
        sources: Sequence[Source],
        digest: str,
        size: int,
        dest: Path,
        pacer: Any,
        reactor: Any,
    ) -> None:
        assert [s.capability for s in sources] == ["get:" + digest]
        dest.write_bytes(fake.objects[digest])
        fake.downloaded.append(digest)

    return Transfers(
        hash_file=sha256_file,
        pack_bundle=pack_bundle,
        upload_file=upload_file,
        download_object=download_object,
        make_pacer=lambda reactor, policy: ("pacer", policy == Policy()),
    )
