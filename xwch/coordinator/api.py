"""The coordinator's JSON API under ``/api/v1/`` (routes listed in docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import msgspec
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.coordinator.attempts import NotYourAttempt
from xwch.coordinator.catalog import Catalog, NoWarehouse
from xwch.coordinator.communication import Busy, CommunicationManager
from xwch.coordinator.groups import GroupLocks
from xwch.coordinator.members import Membership
from xwch.coordinator.openapi import openapi_document
from xwch.coordinator.replication import SecondReplica
from xwch.coordinator.scanner import Scanner
from xwch.coordinator.tasks import (
    BadResult,
    Dropped,
    JobStillRunning,
    MissingObjects,
    TasksManager,
    UnknownJob,
)
from xwch.coordinator.unrunnable import counted
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import ApiRequest, HttpError, Route
from xwch.coordinator.workers import UnknownWorker, WorkersManager, WrongOwner
from xwch.errors import JobFileError
from xwch.protocol.checkpoints import CheckpointRecorded, CheckpointSaved
from xwch.protocol.client import (
    JobCreated,
    JobList,
    ResultFile,
    ResultList,
    TaskList,
    WorkerInfo,
    WorkerList,
)
from xwch.protocol.cluster import GROUP, CoordinatorInfo, CoordinatorList
from xwch.protocol.codec import ProtocolError, ProtocolVersionError, check_version
from xwch.protocol.objects import (
    DownloadsAnswer,
    DownloadsRequest,
    Holder,
    ObjectLocations,
    ObjectSources,
    UploadPlan,
    UploadSlot,
    UploadsRequest,
    WarehouseAddress,
)
from xwch.protocol.warehouse import (
    Heartbeat,
    HeartbeatAnswer,
    ObjectsStored,
    WarehouseList,
    WarehouseRegistered,
    WarehouseRegistration,
    WarehouseSite,
)
from xwch.protocol.wire import (
    DIGEST_PATTERN,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_WAREHOUSE,
    ROLE_WORKER,
)
from xwch.protocol.worker import (
    AliveAnswer,
    Assignment,
    GiveBack,
    HostFacts,
    Registered,
    ResultAnswer,
    ResultsAnswer,
    ResultsReport,
    WorkAlive,
    WorkAnswer,
    WorkRequest,
)
from xwch.store import jobs as job_queries
from xwch.store import nodes
from xwch.store.database import Database
from xwch.store.group_locks import NotHeld
from xwch.store.records import TokenRecord, WorkerRecord

CLIENT = (ROLE_CLIENT,)
WORKER = (ROLE_WORKER,)
WAREHOUSE = (ROLE_WAREHOUSE,)
CLIENT_OR_WORKER = (ROLE_CLIENT, ROLE_WORKER)
EVERY_ROLE = (ROLE_CLIENT, ROLE_WORKER, ROLE_WAREHOUSE)


def map_error(e: Exception) -> HttpError | None:
    """Domain errors as HTTP answers."""
    if isinstance(e, ProtocolVersionError):
        return HttpError(400, "protocol_version", str(e), {"protocol": PROTOCOL_VERSION})
    if isinstance(e, (ProtocolError, BadResult)):
        return HttpError(400, "bad_request", str(e))
    if isinstance(e, JobFileError):
        return HttpError(400, "invalid_job", str(e))
    if isinstance(e, MissingObjects):
        return HttpError(409, "missing_objects", str(e), {"digests": e.digests})
    if isinstance(e, UnknownWorker):
        return HttpError(404, "unknown_worker", str(e))
    if isinstance(e, (WrongOwner, NotYourAttempt, SecondReplica)):
        return HttpError(403, "forbidden", str(e))
    if isinstance(e, Busy):
        return HttpError(503, "busy", str(e), retry_after=e.retry_after)
    if isinstance(e, UnknownJob):
        return HttpError(404, "not_found", str(e))
    if isinstance(e, JobStillRunning):
        return HttpError(409, "job_running", str(e))
    if isinstance(e, NoWarehouse):
        return HttpError(503, "no_warehouse", str(e), retry_after=5.0)
    if isinstance(e, Dropped):
        return HttpError(503, "reloading", str(e), retry_after=1.0)
    if isinstance(e, NotHeld):
        # This coordinator lost a group (it was frozen past its lease) and is rebuilding for
        # those it still holds: asked again, it serves or sends the caller to the holder.
        return HttpError(
            503, "not_serving", "this coordinator just lost a group; ask again", retry_after=1.0
        )
    return None


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
        self.membership: Membership | None = None
        self.groups: GroupLocks | None = None

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
                UploadsRequest,
            ),
            r(
                "POST",
                "/objects/downloads",
                CLIENT_OR_WORKER,
                self.downloads,
                "Where to read objects, with get capabilities",
                DownloadsRequest,
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
            r(
                "GET",
                "/coordinators",
                EVERY_ROLE,
                self.coordinators,
                "The coordinators sharing this store: where each answers, live or lost",
            ),
            r(
                "GET",
                "/token",
                EVERY_ROLE,
                self.token_info,
                "The role and name of the token used (a part checks its token before use)",
            ),
            # Workers
            r("POST", "/workers", WORKER, self.register_worker, "Register Request", HostFacts),
            r(
                "POST",
                "/workers/{worker}/work",
                WORKER,
                self.work_request,
                "Work Request",
                WorkRequest,
            ),
            r(
                "POST",
                "/workers/{worker}/alive",
                WORKER,
                self.work_alive,
                "Work Alive",
                WorkAlive,
            ),
            r(
                "POST",
                "/workers/{worker}/results",
                WORKER,
                self.work_result,
                "Work Result",
                ResultsReport,
            ),
            r(
                "POST",
                "/workers/{worker}/giveback",
                WORKER,
                self.give_back,
                "Give attempts back",
                GiveBack,
            ),
            r(
                "POST",
                "/workers/{worker}/checkpoints",
                WORKER,
                self.checkpoint_saved,
                "A running attempt's checkpoint is stored: record it as its task's latest",
                CheckpointSaved,
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
                WarehouseRegistration,
            ),
            r(
                "POST",
                "/warehouses/{warehouse}/heartbeat",
                WAREHOUSE,
                self.warehouse_heartbeat,
                "Warehouse heartbeat",
                Heartbeat,
            ),
            r(
                "POST",
                "/warehouses/{warehouse}/objects",
                WAREHOUSE,
                self.warehouse_objects,
                "Objects now stored at a warehouse",
                ObjectsStored,
            ),
        ]
        self._routes = routes
        return routes

    async def openapi(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, openapi_document(self._routes)

    # Objects

    async def uploads(self, req: ApiRequest) -> tuple[int, Any]:
        asked: UploadsRequest = req.body
        warehouse = self._catalog.choose_for_upload(asked.site)
        slots = []
        for ref in asked.objects:
            # A copy kept inline does not count: what is uploaded may be a program, which is
            # read from a warehouse only (and a small duplicate there costs nothing).
            present = self._catalog.at_warehouse(ref.digest)
            capability = None if present else self._catalog.put_capability(warehouse, ref.digest)
            slots.append(UploadSlot(digest=ref.digest, present=present, capability=capability))
        return 200, UploadPlan(
            warehouse=WarehouseAddress(id=warehouse.id, url=warehouse.url), objects=tuple(slots)
        )

    async def downloads(self, req: ApiRequest) -> tuple[int, Any]:
        digests: tuple[str, ...] = req.body.digests
        await self._catalog.learn(digests)
        missing = self._catalog.missing(digests)
        if missing:
            raise HttpError(
                404,
                "not_found",
                f"{len(missing)} object(s) are not stored at any warehouse",
                {"digests": missing},
            )
        return 200, DownloadsAnswer(objects=tuple(self._download(d) for d in digests))

    def _download(self, digest: str) -> ObjectSources:
        """Where to read ``digest``; a small object kept here comes with its bytes instead."""
        content = self._catalog.inline(digest)
        if content is not None:
            return ObjectSources(digest=digest, size=len(content), sources=(), content=content)
        size = self._catalog.size(digest)
        assert size is not None  # not missing
        return ObjectSources(digest=digest, size=size, sources=tuple(self._catalog.sources(digest)))

    async def object_locations(self, req: ApiRequest) -> tuple[int, Any]:
        digest = req.params["digest"]
        if not DIGEST_PATTERN.match(digest):
            raise ProtocolError("digest: not a SHA-256 digest (64 lowercase hex digits)")
        await self._catalog.learn([digest])
        size = self._catalog.size(digest)
        if size is None:
            raise HttpError(404, "not_found", f"no warehouse has ever held {digest}")
        return 200, ObjectLocations(
            digest=digest,
            size=size,
            warehouses=tuple(
                Holder(id=w.id, url=w.url, site=w.site) for w in self._catalog.holders(digest)
            ),
            inline=self._catalog.inline(digest) is not None,
        )

    # Jobs

    async def create_job(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        # The group routing.py placed it in (several coordinators), if any.
        job_id = await self._tasks.submit(req.body, owner=req.token.id, group=req.query.get(GROUP))
        return 201, JobCreated(id=job_id)

    async def list_jobs(self, req: ApiRequest) -> tuple[int, Any]:
        jobs = await self._db.read(job_queries.list_jobs_thd)
        return 200, JobList(jobs=tuple(jobs))

    async def _summary(self, job_id: str) -> Any:
        summary = await self._db.read(job_queries.job_summary_thd, job_id)
        if summary is None:
            raise HttpError(404, "not_found", f"no job {job_id}")
        reasons = self._unrunnable(job_id)
        if reasons:
            summary = msgspec.structs.replace(summary, unrunnable=counted(reasons))
        return summary

    def _unrunnable(self, job_id: str) -> dict[str, str]:
        return self._tasks.unrunnable(
            job_id, self._workers.live_platforms(), self._workers.live_trust()
        )

    async def job(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        wait = _wait_query(req.query)
        # A running job (only those are in memory), or one whose end is not stored yet, is
        # answered once its end is stored, or after `wait`.
        if wait > 0 and (job_id in self._tasks.jobs or job_id in self._tasks.ending):
            await self._tasks.endings.wait(job_id, wait, req.caller)
        return 200, await self._summary(job_id)

    async def job_tasks(self, req: ApiRequest) -> tuple[int, Any]:
        await self._summary(req.params["job"])
        rows = await self._db.read(job_queries.list_tasks_thd, req.params["job"])
        reasons = self._unrunnable(req.params["job"])
        if reasons:
            rows = [msgspec.structs.replace(r, why=reasons.get(r.id)) for r in rows]
        return 200, TaskList(tasks=tuple(rows))

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
        return 200, log

    async def cancel(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        await self._tasks.cancel(job_id)
        return 200, await self._summary(job_id)

    async def retry(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        await self._tasks.retry(job_id)
        return 200, await self._summary(job_id)

    async def results(self, req: ApiRequest) -> tuple[int, Any]:
        job_id = req.params["job"]
        await self._summary(job_id)
        spec = await self._db.read(job_queries.job_spec_thd, job_id)
        wanted = {(r["task"], r["output"]) for r in _results_of(spec)}
        if not wanted:
            return 200, ResultList(results=())  # no need to read every output of the job
        rows = await self._db.read(job_queries.outputs_thd, job_id)
        return 200, ResultList(
            results=tuple(
                ResultFile(task=o.task_id, output=o.name, digest=o.digest, size=o.size)
                for o in sorted(rows, key=lambda o: (o.task_id, o.name))
                if (o.task_id, o.name) in wanted
            )
        )

    async def list_workers(self, req: ApiRequest) -> tuple[int, Any]:
        known = {w.id: w for w in await self._db.read(nodes.list_workers_thd)}
        # The store counts tasks done; memory knows who is alive (or suspended, and why), when
        # each was last heard and how many attempts each holds.
        for record in self._workers.list():
            stored = known.get(record.id)
            tasks_done = stored.tasks_done if stored is not None else record.tasks_done
            known[record.id] = replace(record, tasks_done=tasks_done)
        # Live workers first by name; then the lost, the most recently heard first, so that
        # the workers that stopped under one name read newest to oldest.
        live = sorted(
            (w for w in known.values() if w.id in self._workers.workers),
            key=lambda w: (w.name, w.id),
        )
        lost = sorted(
            (w for w in known.values() if w.id not in self._workers.workers),
            key=lambda w: (-w.last_heard, w.id),
        )
        return 200, WorkerList(workers=tuple(self._worker_info(w) for w in live + lost))

    def _worker_info(self, worker: WorkerRecord) -> WorkerInfo:
        if worker.id not in self._workers.workers:
            return worker.info()
        return msgspec.structs.replace(
            worker.info(),
            reason=self._workers.suspended.get(worker.id),
            busy=self._workers.busy_slots(worker.id),
        )

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

    async def token_info(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        return 200, {"role": req.token.role, "name": req.token.name}

    async def coordinators(self, req: ApiRequest) -> tuple[int, Any]:
        assert self.membership is not None
        members = await self.membership.members()
        locks = [] if self.groups is None else await self.groups.locks()
        held: dict[str, list[str]] = {}
        for lock in locks:
            if lock.held and lock.holder is not None:
                held.setdefault(lock.holder, []).append(lock.id)
        return 200, CoordinatorList(
            coordinators=tuple(
                CoordinatorInfo(
                    id=m.id,
                    url=m.url,
                    state="live" if m.live else "lost",
                    groups=tuple(held.get(m.id, ())),
                    workers=m.workers,
                    running=m.running,
                    last_heard=m.last_heard,
                )
                for m in members
            )
        )

    # Workers

    async def register_worker(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        facts: HostFacts = req.body
        check_version(facts.protocol, "worker")
        worker = await self._workers.register(req.token, facts, group=req.query.get(GROUP))
        return 201, Registered(
            worker_id=worker.id,
            alive_interval=self._workers.alive_interval,
            policy=self._communication.policy(),
        )

    async def work_request(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        asked: WorkRequest = req.body
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
        self, token: TokenRecord, worker_id: str, asked: WorkRequest
    ) -> list[Assignment]:
        return await self._workers.work_request(
            token, worker_id, asked.performance, asked.free_slots, asked.idle_slots
        )

    def _work_answer(self, worker_id: str, given: list[Assignment]) -> WorkAnswer:
        """A Work Request's answer: the tasks given and the policy of the worker's link."""
        return WorkAnswer(tasks=tuple(given), policy=self._communication.policy_for(worker_id))

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
        alive: WorkAlive = req.body
        worker_id = req.params["worker"]
        cancels, _ = await self._workers.alive(
            req.token,
            worker_id,
            list(alive.running),
            list(alive.evicted),
            waiting=list(alive.waiting),
            suspended=alive.suspended,
        )
        # The worker's transfers since its last WA feed the load estimate of its link.
        if alive.transfers is not None:
            self._communication.report_worker(worker_id, alive.transfers)
        policy = self._communication.policy_for(worker_id)
        return 200, AliveAnswer(cancel=tuple(cancels), policy=policy)

    async def work_result(self, req: ApiRequest) -> tuple[int, Any]:
        """The results a worker finished (those that ended while its previous report was on
        its way come together, each taken or refused on its own), and the work it asks for."""
        assert req.token is not None
        report: ResultsReport = req.body
        worker_id = req.params["worker"]
        token = req.token
        self._workers.get(worker_id, token)
        # Started together: their writes share one commit.
        recorded = DeferredList(
            [
                ensureDeferred(self._workers.result(token, worker_id, result))
                for result in report.results
            ],
            consumeErrors=True,
        )
        # The work is assigned whatever becomes of the results, at once: the results being
        # taken already (the store keeps the order of writes), the new attempts go in the
        # results' commit, not in one after it.
        assigned: Deferred[WorkAnswer | None] | None = None
        if report.work is not None:
            assigned = ensureDeferred(self._assign_with_result(req, worker_id, report.work))
        outcomes = await recorded
        answers = tuple(self._result_answer(ok, value) for ok, value in outcomes)
        work = None if assigned is None else await assigned
        if work is None:
            return 200, ResultsAnswer(results=answers)
        return 200, ResultsAnswer(results=answers, tasks=work.tasks, policy=work.policy)

    async def _assign_with_result(
        self, req: ApiRequest, worker_id: str, asked: WorkRequest
    ) -> WorkAnswer | None:
        """The work a Work Result asks for, under the same admission control: None when too
        busy or failing to assign (the results are recorded whatever happens here, and the
        worker, finding no "tasks", sends a Work Request of its own). It never waits."""
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
        return None

    def _result_answer(self, ok: bool, value: Any) -> ResultAnswer:
        """One result's part of the answer: taken, or why not (as its own request's)."""
        if ok:
            return ResultAnswer(accepted=value)
        assert isinstance(value, Failure)
        error = map_error(value.value) if isinstance(value.value, Exception) else None
        if error is None:
            self.log.failure("a result failed", value)
            error = HttpError(500, "internal", "the coordinator failed to record the result")
        return ResultAnswer(
            error=error.code,
            message=error.message,
            digests=tuple(error.extra.get("digests", ())),
        )

    async def give_back(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        give_back: GiveBack = req.body
        await self._workers.give_back(req.token, req.params["worker"], list(give_back.attempts))
        return 200, {}

    async def checkpoint_saved(self, req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        worker_id = req.params["worker"]
        self._workers.get(worker_id, req.token)
        book = self._tasks.checkpoints
        if book is None:
            return 200, CheckpointRecorded(recorded=False)
        return 200, await book.record(worker_id, req.body)

    # Warehouses

    async def list_warehouses(self, req: ApiRequest) -> tuple[int, Any]:
        alive = [w for w in self._catalog.warehouses.values() if self._catalog.is_alive(w.id)]
        return 200, WarehouseList(
            warehouses=tuple(
                WarehouseSite(id=w.id, url=w.url, site=w.site)
                for w in sorted(alive, key=lambda w: w.id)
            )
        )

    async def register_warehouse(self, req: ApiRequest) -> tuple[int, Any]:
        asked: WarehouseRegistration = req.body
        check_version(asked.protocol, "warehouse")
        record = await self._catalog.register(
            asked.url, asked.site or "default", asked.capacity, asked.free
        )
        return 201, WarehouseRegistered(
            warehouse_id=record.id,
            heartbeat_interval=self._catalog.heartbeat_interval,
            capability_key=self._catalog.encoded_key(),
        )

    async def _warehouse(self, req: ApiRequest) -> str:
        warehouse_id = req.params["warehouse"]
        # Known to the store alone when it registered at another member.
        if not await self._catalog.known(warehouse_id):
            raise HttpError(404, "unknown_warehouse", f"warehouse {warehouse_id} is not registered")
        return warehouse_id

    async def warehouse_heartbeat(self, req: ApiRequest) -> tuple[int, Any]:
        warehouse_id = await self._warehouse(req)
        beat: Heartbeat = req.body
        await self._catalog.heartbeat(warehouse_id, beat.capacity, beat.free)
        url = self._catalog.warehouses[warehouse_id].url
        sessions = None if beat.sessions is None else msgspec.structs.asdict(beat.sessions)
        self._communication.report_warehouse(url, beat.transfers, sessions)
        return 200, HeartbeatAnswer(policy=self._communication.warehouse_policy(url))

    async def warehouse_objects(self, req: ApiRequest) -> tuple[int, Any]:
        warehouse_id = await self._warehouse(req)
        stored: ObjectsStored = req.body
        objects = [(r.digest, r.size) for r in stored.objects]
        if stored.complete:
            await self._catalog.replace_objects(warehouse_id, objects)
        else:
            await self._catalog.add_objects(warehouse_id, objects)
        return 200, {}


def _results_of(spec: str | None) -> list[dict[str, str]]:
    if spec is None:
        return []
    doc = json.loads(spec)
    results = doc.get("results", [])
    return [r for r in results if isinstance(r, dict)]
