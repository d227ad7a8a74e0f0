"""A small typed async API over the coordinator's client routes (``docs/protocol.md``).

Every method is one request; errors are those of :class:`xwch.http.JsonApi`
(:class:`~xwch.errors.ApiError`, :class:`~xwch.errors.Unreachable`) plus
:class:`~xwch.protocol.ProtocolError` when an answer does not have the documented shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from xwch.http import JsonApi
from xwch.protocol import API_PREFIX, ObjectRef, ProtocolError, require_object
from xwch.views import AttemptLog, JobSummary, TaskInfo, WorkerInfo

from .records import ObjectSources, ResultFile, UploadPlan


def _segment(value: str) -> str:
    # Ids travel in the path: quote everything, "/" included, so no id can reach another route.
    return quote(value, safe="")


def _items(doc: object, key: str, where: str) -> list[Any]:
    d = require_object(doc, where)
    items = d.get(key)
    if not isinstance(items, list):
        raise ProtocolError(f"{where}.{key}: expected a list")
    return items


class CoordinatorClient:
    """The client routes of one coordinator, called with one token."""

    def __init__(self, api: JsonApi) -> None:
        self.api = api

    @property
    def url(self) -> str:
        return self.api.base_url

    async def submit_job(self, wire: Mapping[str, Any]) -> str:
        """Create a job from its wire form; its id."""
        answer = require_object(await self.api.post(f"{API_PREFIX}/jobs", dict(wire)), "job")
        job_id = answer.get("id")
        if not isinstance(job_id, (str, int)) or isinstance(job_id, bool):
            raise ProtocolError("job.id: expected a string")
        return str(job_id)

    async def job(self, job_id: str, wait: float = 0.0) -> JobSummary:
        """The job now; with ``wait``, once it has ended or ``wait`` seconds have passed
        (a coordinator that cannot wait answers at once)."""
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}"
        if wait > 0:
            path += f"?wait={wait:g}"
        return JobSummary.from_json(await self.api.get(path))

    async def jobs(self) -> list[JobSummary]:
        """Every job the token may see, newest first."""
        doc = await self.api.get(f"{API_PREFIX}/jobs")
        return [
            JobSummary.from_json(j, f"jobs[{n}]") for n, j in enumerate(_items(doc, "jobs", "jobs"))
        ]

    async def tasks(self, job_id: str) -> list[TaskInfo]:
        doc = await self.api.get(f"{API_PREFIX}/jobs/{_segment(job_id)}/tasks")
        return [
            TaskInfo.from_json(t, f"tasks[{n}]")
            for n, t in enumerate(_items(doc, "tasks", "tasks"))
        ]

    async def logs(self, job_id: str, task: str, attempt: int | None = None) -> AttemptLog:
        """The kept output of one attempt of a task; by default its last attempt."""
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}/tasks/{_segment(task)}/logs"
        if attempt is not None:
            path += f"?attempt={attempt}"
        return AttemptLog.from_json(await self.api.get(path))

    async def cancel(self, job_id: str) -> JobSummary:
        return JobSummary.from_json(
            await self.api.post(f"{API_PREFIX}/jobs/{_segment(job_id)}/cancel")
        )

    async def retry(self, job_id: str) -> JobSummary:
        """Run again the failed and cancelled tasks of an ended job, keeping what is done."""
        return JobSummary.from_json(
            await self.api.post(f"{API_PREFIX}/jobs/{_segment(job_id)}/retry")
        )

    async def results(self, job_id: str) -> list[ResultFile]:
        """The job's results that exist (some may be missing when the job failed)."""
        doc = await self.api.get(f"{API_PREFIX}/jobs/{_segment(job_id)}/results")
        return [
            ResultFile.from_json(r, f"results[{n}]")
            for n, r in enumerate(_items(doc, "results", "results"))
        ]

    async def workers(self) -> list[WorkerInfo]:
        doc = await self.api.get(f"{API_PREFIX}/workers")
        return [
            WorkerInfo.from_json(w, f"workers[{n}]")
            for n, w in enumerate(_items(doc, "workers", "workers"))
        ]

    async def uploads(self, objects: Iterable[ObjectRef], site: str | None = None) -> UploadPlan:
        """Which of ``objects`` some warehouse lacks, and where (at ``site``) to upload them."""
        body: dict[str, object] = {"objects": [o.to_json() for o in objects]}
        if site is not None:
            body["site"] = site
        return UploadPlan.from_json(await self.api.post(f"{API_PREFIX}/objects/uploads", body))

    async def downloads(self, digests: Iterable[str]) -> dict[str, ObjectSources]:
        """Digest -> where to read it, for each of ``digests``."""
        body = {"digests": list(digests)}
        doc = await self.api.post(f"{API_PREFIX}/objects/downloads", body)
        found = [
            ObjectSources.from_json(o, f"downloads.objects[{n}]")
            for n, o in enumerate(_items(doc, "objects", "downloads"))
        ]
        return {o.digest: o for o in found}
