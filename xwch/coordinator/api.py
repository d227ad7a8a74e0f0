"""The coordinator's JSON API under ``/api/v1/`` (routes listed in docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.coordinator.catalog import Catalog, NoWarehouse
from xwch.coordinator.communication import Busy, CommunicationManager
from xwch.coordinator.openapi import openapi_document
from xwch.coordinator.scanner import Scanner
from xwch.coordinator.tasks import (
    BadResult,
    JobStillRunning,
    MissingObjects,
    NotYourAttempt,
    TasksManager,
    UnknownJob,
)
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import ApiRequest, HttpError, Route
from xwch.coordinator.workers import UnknownWorker, WorkersManager, WrongOwner
from xwch.errors import JobFileError
from xwch.protocol import (
    ROLE_CLIENT,
    ROLE_WAREHOUSE,
    ROLE_WORKER,
    Assignment,
    AttemptResult,
    HostFacts,
    ObjectRef,
    ProtocolError,
    RunningAttempt,
    TransfersReport,
    encode_content,
    require_digest,
    require_object,
)
from xwch.store import jobs as job_queries
from xwch.store import nodes
from xwch.store.database import Database
from xwch.store.records import TokenRecord

CLIENT = (ROLE_CLIENT,)
WORKER = (ROLE_WORKER,)
WAREHOUSE = (ROLE_WAREHOUSE,)
CLIENT_OR_WORKER = (ROLE_CLIENT, ROLE_WORKER)


def map_error(e: Exception) -> HttpError | None:
    """Domain errors as HTTP answers."""
    if isinstance(e, (ProtocolError, BadResult)):
        return HttpError(400, "bad_request", str(e))
    if isinstance(e, JobFileError):
        return HttpError(400, "invalid_job", str(e))
    if isinstance(e, MissingObjects):
        return HttpError(409, "missing_objects", str(e), {"digests": e.digests})
    if isinstance(e, UnknownWorker):
        return HttpError(404, "unknown_worker", str(e))
    if isinstance(e, (WrongOwner, NotYourAttempt)):
        return HttpError(403, "forbidden", str(e))
    if isinstance(e, Busy):
        return HttpError(503, "busy", str(e), retry_after=e.retry_after)
    if isinstance(e, UnknownJob):
        return HttpError(404, "not_found", str(e))
    if isinstance(e, JobStillRunning):
        return HttpError(409, "job_running", str(e))
    if isinstance(e, NoWarehouse):
        return HttpError(503, "no_warehouse", str(e), retry_after=5.0)
    return None


def _list_of(body: Any, key: str, where: str) -> list[Any]:
    value = require_object(body, where).get(key)
    if not isinstance(value, list):
        raise ProtocolError(f"{where}.{key}: expected a list")
    return value


def _int(body: Any, key: str, where: str) -> int:
    value = require_object(body, where).get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{where}.{key}: expected an integer")
    return value


def _idle_slots(body: Any, where: str) -> int | None:
    """A Work Request's optional ``idle_slots``: slots with nothing to run (the others of
    ``free_slots`` are asked for ahead); None when not said (all are idle)."""
    if "idle_slots" not in require_object(body, where):
        return None
    value = _int(body, "idle_slots", where)
    if value < 0:
        raise ProtocolError(f"{where}.idle_slots: expected an integer >= 0")
    return value


def _seconds(body: Any, key: str, where: str) -> float:
    """An optional duration in seconds, >= 0; 0 when not said."""
    if key not in require_object(body, where):
        return 0.0
    value = _number(body, key, where)
    if not value >= 0 or value == float("inf"):
        raise ProtocolError(f"{where}.{key}: expected a number of seconds >= 0")
    return value


def _wait_query(query: Mapping[str, str]) -> float:
    """``?wait=S`` of a poll: how long it may wait for a change; 0 when not said."""
    raw = query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ProtocolError(f"wait: expected a number of seconds >= 0, got {raw!r}")
    return value


def _number(body: Any, key: str, where: str) -> float:
    value = require_object(body, where).get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ProtocolError(f"{where}.{key}: expected a number")
    return float(value)


@dataclass(frozen=True)
class _WorkAsked:
    """What a Work Request asks for, alone or carried by a Work Result."""

    performance: float
    free_slots: int
    idle_slots: int | None
    # How long the request may wait for work when there is none (0: answer at once).
    wait: float = 0.0

    @classmethod
    def from_json(cls, body: Any, where: str) -> _WorkAsked:
        return cls(
            performance=_number(body, "performance", where),
            free_slots=_int(body, "free_slots", where),
            idle_slots=_idle_slots(body, where),
            wait=_seconds(body, "wait", where),
        )


def _str(body: Any, key: str, where: str) -> str:
    value = require_object(body, where).get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}.{key}: expected a non-empty string")
    return value


class CoordinatorApi:
    """The handlers; each takes an :class:`ApiRequest` and answers ``(status, JSON)``."""

    log = Logger()

    def __init__(
        self,
        db: Database,
        tasks: TasksManager,
        workers: WorkersManager,
        catalog: Catalog,
        communication: CommunicationManager,
        waiting: WorkWaitingRoom,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._workers = workers
        self._catalog = catalog
        self._communication = communication
        self.waiting = waiting
        self.scanner: Scanner | None = None

    def routes(self) -> list[Route]:
        r = Route
        routes = [
            r("GET", "/openapi.json", (), self.openapi, "This document"),
            # Clients
            r(
                "POST",
                "/objects/uploads",
                CLIENT_OR_WORKER,
                self.uploads,
                "Where to upload objects, with put capabilities",
                "UploadsRequest",
            ),
            r(
                "POST",
                "/objects/downloads",
                CLIENT_OR_WORKER,
                self.downloads,
                "Where to read objects, with get capabilities",
                "DownloadsRequest",
            ),
            r(
                "GET",
                "/objects/{digest}",
                CLIENT_OR_WORKER,
                self.object_locations,
                "Which live warehouses hold an object",
            ),
            r(
                "POST",
                "/jobs",
                CLIENT,
                self.create_job,
                "Create a job from its wire form",
                "WireJob",
            ),
            r("GET", "/jobs", CLIENT, self.list_jobs, "The jobs, newest first"),
            r(
                "GET",
                "/jobs/{job}",
                CLIENT,
                self.job,
                "A job's state and its tasks counted by state",
            ),
            r("GET", "/jobs/{job}/tasks", CLIENT, self.job_tasks, "One row a task"),
            r(
                "GET",
                "/jobs/{job}/tasks/{task}/logs",
                CLIENT,
                self.logs,
                "Standard output and error of an attempt",
            ),
            r("POST", "/jobs/{job}/cancel", CLIENT, self.cancel, "Stop a job"),
            r(
                "POST",
                "/jobs/{job}/retry",
                CLIENT,
                self.retry,
                "Run again a failed or cancelled job's unfinished tasks",
            ),
            r("GET", "/jobs/{job}/results", CLIENT, self.results, "The job's result objects"),
            r("GET", "/workers", CLIENT, self.list_workers, "One row a worker"),
            r("GET", "/status", CLIENT, self.status, "Policy, limits and queue lengths"),
            # Workers
            r("POST", "/workers", WORKER, self.register_worker, "Register Request", "HostFacts"),
            r(
                "POST",
                "/workers/{worker}/work",
                WORKER,
                self.work_request,
                "Work Request",
                "WorkRequest",
            ),
            r(
                "POST",
                "/workers/{worker}/alive",
                WORKER,
                self.work_alive,
                "Work Alive",
                "WorkAlive",
            ),
            r(
                "POST",
                "/workers/{worker}/results",
                WORKER,
                self.work_result,
                "Work Result",
                "AttemptResult",
            ),
            r(
                "POST",
                "/workers/{worker}/giveback",
                WORKER,
                self.give_back,
                "Give attempts back",
                "GiveBack",
            ),
            # Warehouses
            r(
                "GET",
                "/warehouses",
                CLIENT_OR_WORKER,
                self.list_warehouses,
                "The live warehouses and their sites (a worker finds its nearest)",
            ),
            r(
                "POST",
                "/warehouses",
                WAREHOUSE,
                self.register_warehouse,
                "Register a warehouse",
                "WarehouseRegistration",
            ),
            r(
                "POST",
                "/warehouses/{warehouse}/heartbeat",
                WAREHOUSE,
                self.warehouse_heartbeat,
                "Warehouse heartbeat",
                "WarehouseHeartbeat",
            ),
            r(
                "POST",
                "/warehouses/{warehouse}/objects",
                WAREHOUSE,
                self.warehouse_objects,
                "Objects now stored at a warehouse",
                "ObjectsStored",
            ),
        ]
        self._routes = routes
        return routes

    async def openapi(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, openapi_document(self._routes)

    # Objects

    async def uploads(self, req: ApiRequest) -> tuple[int, Any]:
        items = _list_of(req.body, "objects", "uploads")
        refs = [ObjectRef.from_json(o, f"uploads.objects[{n}]") for n, o in enumerate(items)]
        site = require_object(req.body, "uploads").get("site")
        warehouse = self._catalog.choose_for_upload(site if isinstance(site, str) else None)
        answer = []
        for ref in refs:
            # A copy kept inline does not count: what is uploaded may be a program, which is
            # read from a warehouse only (and a small duplicate there costs nothing).
            present = self._catalog.at_warehouse(ref.digest)
            answer.append(
                {
                    "digest": ref.digest,
                    "present": present,
                    "capability": None
                    if present
                    else self._catalog.put_capability(warehouse, ref.digest),
                }
            )
        return 200, {"warehouse": {"id": warehouse.id, "url": warehouse.url}, "objects": answer}

    async def downloads(self, req: ApiRequest) -> tuple[int, Any]:
        digests = [
            require_digest(d, f"downloads.digests[{n}]")
            for n, d in enumerate(_list_of(req.body, "digests", "downloads"))
        ]
        missing = self._catalog.missing(digests)
        if missing:
            raise HttpError(
                404,
                "not_found",
                f"{len(missing)} object(s) are not stored at any warehouse",
                {"digests": missing},
            )
        return 200, {"objects": [self._download(d) for d in digests]}

    def _download(self, digest: str) -> dict[str, Any]:
        """Where to read ``digest``; a small object kept here comes with its bytes instead."""
        content = self._catalog.inline(digest)
        if content is not None:
            return {
                "digest": digest,
                "size": len(content),
                "sources": [],
                "content": encode_content(content),
            }
        return {
            "digest": digest,
            "size": self._catalog.size(digest),
            "sources": [s.to_json() for s in self._catalog.sources(digest)],
        }

    async def object_locations(self, req: ApiRequest) -> tuple[int, Any]:
        digest = require_digest(req.params["digest"], "digest")
        if self._catalog.size(digest) is None:
            raise HttpError(404, "not_found", f"no warehouse has ever held {digest}")
        return 200, {
            "digest": digest,
            "size": self._catalog.size(digest),
            "warehouses": [
                {"id": w.id, "url": w.url, "site": w.site} for w in self._catalog.holders(digest)
            ],
            "inline": self._catalog.inline(digest) is not None,
        }

    # Jobs

    async def create_job(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        job_id = await self._tasks.submit(req.body, owner=req.token.id)
        return 201, {"id": job_id}

    async def list_jobs(self, req: ApiRequest) -> tuple[int, Any]:
        jobs = await self._db.read(job_queries.list_jobs_thd)
        return 200, {"jobs": [j.to_json() for j in jobs]}

    async def _summary(self, job_id: str) -> Any:
        summary = await self._db.read(job_queries.job_summary_thd, job_id)
        if summary is None:
            raise HttpError(404, "not_found", f"no job {job_id}")
        return summary

    async def job(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        wait = _wait_query(req.query)
        # A running job (only those are in memory), or one whose end is not stored yet, is
        # answered once its end is stored, or after `wait`.
        if wait > 0 and (job_id in self._tasks.jobs or job_id in self._tasks.ending):
            await self._tasks.endings.wait(job_id, wait, req.caller)
        return 200, (await self._summary(job_id)).to_json()

    async def job_tasks(self, req: ApiRequest) -> tuple[int, Any]:
        await self._summary(req.params["job"])
        rows = await self._db.read(job_queries.list_tasks_thd, req.params["job"])
        return 200, {"tasks": [t.to_json() for t in rows]}

    async def logs(self, req: ApiRequest) -> tuple[int, Any]:
        job_id, task_id = req.params["job"], req.params["task"]
        await self._summary(job_id)
        number: int | None = None
        if "attempt" in req.query:
            try:
                number = int(req.query["attempt"])
            except ValueError:
                raise HttpError(400, "bad_request", "attempt: expected an integer") from None
        if not await self._db.read(job_queries.task_exists_thd, job_id, task_id):
            raise HttpError(404, "not_found", f"job {job_id} has no task {task_id}")
        log = await self._db.read(job_queries.attempt_log_thd, job_id, task_id, number)
        if log is None:
            if number is None:
                raise HttpError(404, "not_found", f"task {task_id} has not run yet")
            raise HttpError(404, "not_found", f"task {task_id} has no attempt {number}")
        return 200, log.to_json()

    async def cancel(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        await self._tasks.cancel(job_id)
        return 200, (await self._summary(job_id)).to_json()

    async def retry(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        await self._tasks.retry(job_id)
        return 200, (await self._summary(job_id)).to_json()

    async def results(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        spec = await self._db.read(job_queries.job_spec_thd, job_id)
        wanted = {(r["task"], r["output"]) for r in _results_of(spec)}
        if not wanted:
            return 200, {"results": []}  # no need to read every output of the job
        rows = await self._db.read(job_queries.outputs_thd, job_id)
        return 200, {
            "results": [
                {"task": o.task_id, "output": o.name, "digest": o.digest, "size": o.size}
                for o in sorted(rows, key=lambda o: (o.task_id, o.name))
                if (o.task_id, o.name) in wanted
            ]
        }

    async def list_workers(self, req: ApiRequest) -> tuple[int, Any]:
        known = {w.id: w for w in await self._db.read(nodes.list_workers_thd)}
        # The store counts tasks done; memory knows who is alive and when each was last heard.
        for live in self._workers.list():
            stored = known.get(live.id)
            tasks_done = stored.tasks_done if stored is not None else live.tasks_done
            known[live.id] = replace(live, tasks_done=tasks_done)
        rows = sorted(known.values(), key=lambda w: (w.state != "alive", w.name, w.id))
        return 200, {"workers": [w.info().to_json() for w in rows]}

    async def status(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, {
            "communication": self._communication.status(),
            "tasks": dict(self._tasks.counts()),
            "scanner": None if self.scanner is None else self.scanner.status(),
            "quarantines": self._tasks.health.quarantines,
            "workers": len(self._workers.workers),
            "warehouses": [
                {
                    "id": w.id,
                    "url": w.url,
                    "site": w.site,
                    "free": w.free,
                    "alive": self._catalog.is_alive(w.id),
                }
                for w in self._catalog.warehouses.values()
            ],
        }

    # Workers

    async def register_worker(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        facts = HostFacts.from_json(req.body)
        worker = await self._workers.register(req.token, facts)
        return 201, {
            "worker_id": worker.id,
            "alive_interval": self._workers.alive_interval,
            "policy": self._communication.policy().to_json(),
        }

    async def work_request(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        asked = _WorkAsked.from_json(req.body, "work")
        token, worker_id = req.token, req.params["worker"]
        seen = self.waiting.appeared
        with self._communication.admit_work_request():
            given = await self._assignments(token, worker_id, asked)
        if not given and asked.wait > 0:
            # Nothing to do: wait for work here (out of the admission count, which bounds the
            # requests being worked on, not those waiting) rather than be asked again soon.
            given = await self.waiting.wait(
                worker_id,
                asked.wait,
                lambda: ensureDeferred(self._assignments(token, worker_id, asked)),
                req.caller,
                seen,
            )
        await self._unless_gone(req, worker_id, given)
        return 200, self._work_answer(worker_id, given)

    async def _assignments(
        self, token: TokenRecord, worker_id: str, asked: _WorkAsked
    ) -> list[Assignment]:
        return await self._workers.work_request(
            token, worker_id, asked.performance, asked.free_slots, asked.idle_slots
        )

    def _work_answer(self, worker_id: str, given: list[Assignment]) -> dict[str, Any]:
        """A Work Request's answer: the tasks given and the policy of the worker's link."""
        return {
            "tasks": [a.to_json() for a in given],
            "policy": self._communication.policy_for(worker_id).to_json(),
        }

    async def _unless_gone(self, req: ApiRequest, worker_id: str, given: list[Assignment]) -> None:
        """Attempts given to a caller that hung up meanwhile never reach it: they run again
        at once (no failure counted), rather than after three missed Work Alives."""
        if given and req.caller.gone():
            assert req.token is not None
            self.log.info(
                "worker {worker} hung up before getting {n} attempts; they run again",
                worker=worker_id,
                n=len(given),
            )
            await self._workers.give_back(req.token, worker_id, [a.attempt for a in given])

    async def work_alive(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        running = [
            RunningAttempt.from_json(r, f"alive.running[{n}]")
            for n, r in enumerate(_list_of(req.body, "running", "alive"))
        ]
        transfers = _transfers(req.body, "alive")
        evicted = _list_of(req.body, "evicted", "alive") if "evicted" in req.body else []
        for n, digest in enumerate(evicted):
            require_digest(digest, f"alive.evicted[{n}]")
        worker_id = req.params["worker"]
        cancels, _ = await self._workers.alive(req.token, worker_id, running, evicted)
        # The worker's transfers since its last WA feed the load estimate of its link.
        if transfers is not None:
            self._communication.report_worker(worker_id, transfers)
        policy = self._communication.policy_for(worker_id)
        return 200, {"cancel": cancels, "policy": policy.to_json()}

    async def work_result(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        body = require_object(req.body, "result")
        batch = "results" in body
        if batch:
            # Several results in one request: those a worker finished while its previous one
            # was on its way. Each is taken or refused on its own.
            results = [
                AttemptResult.from_json(r, f"results[{n}]")
                for n, r in enumerate(_list_of(body, "results", "result"))
            ]
        else:
            results = [AttemptResult.from_json(body)]
        work = body.get("work")
        # Checked before the results are taken: a malformed request changes nothing.
        asked = None if work is None else _WorkAsked.from_json(work, "result.work")
        worker_id = req.params["worker"]
        token = req.token
        self._workers.get(worker_id, token)
        # Started together: their writes share one commit.
        recorded = DeferredList(
            [ensureDeferred(self._workers.result(token, worker_id, result)) for result in results],
            consumeErrors=True,
        )
        # A batch's work is assigned whatever becomes of its results: at once, the results
        # being taken already (the store keeps the order of writes), so the new attempts go
        # in the results' commit, not in one after it. A single result's, once it is taken.
        assigned: Deferred[dict[str, Any]] | None = None
        if asked is not None and batch:
            assigned = ensureDeferred(self._assign_with_result(req, worker_id, asked))
        outcomes = await recorded
        answer: dict[str, Any]
        if batch:
            answer = {"results": [self._result_answer(ok, value) for ok, value in outcomes]}
        else:
            [(_ok, value)] = outcomes
            if isinstance(value, Failure):
                value.raiseException()
            answer = {"accepted": value}
            if asked is not None:
                assigned = ensureDeferred(self._assign_with_result(req, worker_id, asked))
        if assigned is not None:
            answer.update(await assigned)
        return 200, answer

    async def _assign_with_result(
        self, req: ApiRequest, worker_id: str, asked: _WorkAsked
    ) -> dict[str, Any]:
        """The work a Work Result asks for, under the same admission control: no key at all
        when too busy or failing to assign (the result is recorded whatever happens here, and
        the worker, finding no "tasks", sends a Work Request of its own). It never waits."""
        assert req.token is not None
        try:
            with self._communication.admit_work_request():
                given = await self._assignments(req.token, worker_id, asked)
            await self._unless_gone(req, worker_id, given)
            return self._work_answer(worker_id, given)
        except Busy:
            pass
        except Exception:
            self.log.failure("assigning work with the result of {worker} failed", worker=worker_id)
        return {}

    def _result_answer(self, ok: bool, value: Any) -> dict[str, Any]:
        """One result's part of a batch's answer: taken, or why not (as its own request's)."""
        if ok:
            return {"accepted": value}
        assert isinstance(value, Failure)
        error = map_error(value.value) if isinstance(value.value, Exception) else None
        if error is None:
            self.log.failure("a result in a batch failed", value)
            error = HttpError(500, "internal", "the coordinator failed to record the result")
        return {"error": error.code, "message": error.message, **error.extra}

    async def give_back(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        attempts = _list_of(req.body, "attempts", "giveback")
        if not all(isinstance(a, str) for a in attempts):
            raise ProtocolError("giveback.attempts: expected attempt ids")
        await self._workers.give_back(req.token, req.params["worker"], attempts)
        return 200, {}

    # Warehouses

    async def list_warehouses(self, req: ApiRequest) -> tuple[int, Any]:
        alive = [w for w in self._catalog.warehouses.values() if self._catalog.is_alive(w.id)]
        return 200, {
            "warehouses": [
                {"id": w.id, "url": w.url, "site": w.site}
                for w in sorted(alive, key=lambda w: w.id)
            ]
        }

    async def register_warehouse(self, req: ApiRequest) -> tuple[int, Any]:
        url = _str(req.body, "url", "warehouse")
        if not url.startswith(("http://", "https://")):
            raise ProtocolError("warehouse.url: must start with http:// or https://")
        site = require_object(req.body, "warehouse").get("site") or "default"
        if not isinstance(site, str):
            raise ProtocolError("warehouse.site: expected a string")
        record = await self._catalog.register(
            url, site, _int(req.body, "capacity", "warehouse"), _int(req.body, "free", "warehouse")
        )
        return 201, {
            "warehouse_id": record.id,
            "heartbeat_interval": self._catalog.heartbeat_interval,
            "capability_key": self._catalog.encoded_key(),
        }

    def _warehouse(self, req: ApiRequest) -> str:
        warehouse_id = req.params["warehouse"]
        if warehouse_id not in self._catalog.warehouses:
            raise HttpError(404, "unknown_warehouse", f"warehouse {warehouse_id} is not registered")
        return warehouse_id

    async def warehouse_heartbeat(self, req: ApiRequest) -> tuple[int, Any]:
        warehouse_id = self._warehouse(req)
        transfers = _transfers(req.body, "heartbeat")
        sessions = _sessions(req.body)
        await self._catalog.heartbeat(
            warehouse_id,
            _int(req.body, "capacity", "heartbeat"),
            _int(req.body, "free", "heartbeat"),
        )
        url = self._catalog.warehouses[warehouse_id].url
        self._communication.report_warehouse(url, transfers, sessions)
        return 200, {"policy": self._communication.warehouse_policy(url).to_json()}

    async def warehouse_objects(self, req: ApiRequest) -> tuple[int, Any]:
        warehouse_id = self._warehouse(req)
        refs = [
            ObjectRef.from_json(o, f"objects[{n}]")
            for n, o in enumerate(_list_of(req.body, "objects", "stored"))
        ]
        complete = require_object(req.body, "stored").get("complete", False)
        if not isinstance(complete, bool):
            raise ProtocolError("stored.complete: expected true or false")
        objects = [(r.digest, r.size) for r in refs]
        if complete:
            await self._catalog.replace_objects(warehouse_id, objects)
        else:
            await self._catalog.add_objects(warehouse_id, objects)
        return 200, {}


def _transfers(body: Any, where: str) -> TransfersReport | None:
    """The optional ``transfers`` report of a Work Alive or a heartbeat."""
    doc = require_object(body, where).get("transfers")
    return None if doc is None else TransfersReport.from_json(doc, f"{where}.transfers")


def _sessions(body: Any) -> dict[str, int] | None:
    """The optional ``sessions`` of a heartbeat: ``{"active", "limit", "refused"}``."""
    doc = require_object(body, "heartbeat").get("sessions")
    if doc is None:
        return None
    sessions = require_object(doc, "heartbeat.sessions")
    counts = {}
    for key in ("active", "limit", "refused"):
        value = sessions.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError(f"heartbeat.sessions.{key}: expected a non-negative integer")
        counts[key] = value
    return counts


def _results_of(spec: str | None) -> list[dict[str, str]]:
    if spec is None:
        return []
    doc = json.loads(spec)
    results = doc.get("results", [])
    return [r for r in results if isinstance(r, dict)]
