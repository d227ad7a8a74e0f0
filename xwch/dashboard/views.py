"""What each page shows, read through the coordinator's own API handlers.

Going through :class:`CoordinatorApi` (rather than the managers' insides) means the dashboard
shows exactly what ``xwch-client`` is told, in the same typed messages, and is not touched when
the managers change shape. What the API does not carry (a job's edges, busy slots, heartbeats,
traffic over time) comes from small read-only callables handed in by the assembly.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xwch.coordinator.api import CoordinatorApi
from xwch.coordinator.web import ApiRequest
from xwch.dashboard.observer import SignalObserver, WorkerSignals
from xwch.dashboard.traffic import LinkRates, TrafficHistory
from xwch.protocol.client import AttemptLog, JobSummary, TaskInfo, WorkerInfo
from xwch.protocol.cluster import CoordinatorInfo
from xwch.store import jobs as job_queries
from xwch.store.database import Database


@dataclass(frozen=True)
class JobGraph:
    """A job's edges: for each task, the tasks it waits for, in the job file's order."""

    dependencies: Mapping[str, tuple[str, ...]]

    def is_gather(self, task_id: str) -> bool:
        """A task reading the outputs of several tasks: where a map's results come together."""
        return len(self.dependencies.get(task_id, ())) > 1


@dataclass(frozen=True)
class JobView:
    job: JobSummary
    tasks: tuple[TaskInfo, ...]
    graph: JobGraph


@dataclass(frozen=True)
class WorkerRow:
    info: WorkerInfo
    busy: int
    signals: WorkerSignals


@dataclass(frozen=True)
class WarehouseRow:
    id: str
    url: str
    site: str
    free: int
    alive: bool


@dataclass(frozen=True)
class NetworkView:
    network_load: float
    policy: Mapping[str, Any]
    links: tuple[Mapping[str, Any], ...]
    since: float
    rates: tuple[LinkRates, ...]
    bucket: float


def _dependencies_thd(conn: Any, job_id: str) -> dict[str, tuple[str, ...]]:
    """Each task's dependencies, from the job's stored wire form (checked when it was
    submitted, so read as it is): on a reader thread, since a 40,000-task job's is megabytes."""
    spec = job_queries.job_spec_thd(conn, job_id)
    if spec is None:
        return {}
    deps: dict[str, tuple[str, ...]] = {}
    for task in json.loads(spec).get("tasks", ()):
        needed = {i["task"] for i in task.get("inputs", ()) if i.get("task") is not None}
        needed.update(task.get("after", ()))
        deps[task["id"]] = tuple(sorted(needed))
    return deps


def _ask() -> ApiRequest:
    return ApiRequest(token=None, params={}, query={}, body=None)


class DashboardViews:
    """One async method per page; each answers frozen values, ready to render."""

    # Jobs' edges kept: they never change, and reading a 10,000-task job's takes a tenth of a
    # second, too long to do at every refresh of its page.
    GRAPHS_KEPT = 16

    def __init__(
        self,
        api: CoordinatorApi,
        db: Database,
        observer: SignalObserver,
        traffic: TrafficHistory,
        busy_slots: Callable[[str], int],
    ) -> None:
        self._api = api
        self._db = db
        self._observer = observer
        self._traffic = traffic
        self._busy_slots = busy_slots
        self._graphs: OrderedDict[str, JobGraph] = OrderedDict()

    async def jobs(self) -> tuple[JobSummary, ...]:
        _, answer = await self._api.list_jobs(_ask())
        return tuple(answer.jobs)

    async def job(self, job_id: str) -> JobView:
        params = {"job": job_id}
        _, summary = await self._api.job(ApiRequest(None, params, {}, None))
        _, tasks = await self._api.job_tasks(ApiRequest(None, params, {}, None))
        return JobView(summary, tuple(tasks.tasks), await self._graph(job_id))

    async def _graph(self, job_id: str) -> JobGraph:
        graph = self._graphs.get(job_id)
        if graph is not None:
            self._graphs.move_to_end(job_id)
            return graph
        graph = JobGraph(await self._db.read(_dependencies_thd, job_id))
        self._graphs[job_id] = graph
        while len(self._graphs) > self.GRAPHS_KEPT:
            self._graphs.popitem(last=False)
        return graph

    async def logs(self, job_id: str, task_id: str) -> AttemptLog:
        _, log = await self._api.logs(ApiRequest(None, {"job": job_id, "task": task_id}, {}, None))
        assert isinstance(log, AttemptLog)
        return log

    async def workers(self) -> tuple[WorkerRow, ...]:
        _, answer = await self._api.list_workers(_ask())
        return tuple(
            WorkerRow(
                info=w,
                busy=(w.busy if w.busy is not None else self._busy_slots(w.id))
                if w.state != "lost"
                else 0,
                signals=self._observer.workers.get(w.id, WorkerSignals()),
            )
            for w in answer.workers
        )

    async def warehouses(self) -> tuple[WarehouseRow, ...]:
        _, status = await self._api.status(_ask())
        return tuple(
            WarehouseRow(w["id"], w["url"], w["site"], w["free"], w["alive"])
            for w in sorted(status["warehouses"], key=lambda w: (w["site"], w["id"]))
        )

    async def coordinators(self) -> tuple[CoordinatorInfo, ...]:
        if self._api.membership is None:
            return ()
        _, answer = await self._api.coordinators(_ask())
        return tuple(answer.coordinators)

    async def network(self) -> NetworkView:
        _, status = await self._api.status(_ask())
        communication = status["communication"]
        since, rates = self._traffic.rates()
        return NetworkView(
            network_load=float(communication["network_load"]),
            policy=communication["policy"],
            links=tuple(communication["links"]),
            since=since,
            rates=tuple(rates),
            bucket=self._traffic.BUCKET,
        )

    async def status(self) -> Mapping[str, Any]:
        _, status = await self._api.status(_ask())
        return status  # type: ignore[no-any-return]
