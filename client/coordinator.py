"""A small typed async API over the coordinator's client routes (``docs/protocol.md``).

Every method is one request; errors are those of :class:`xwch.http.JsonApi`
(:class:`~xwch.errors.ApiError`, :class:`~xwch.errors.Unreachable`) plus
:class:`~xwch.protocol.codec.ProtocolError` when an answer does not have the documented shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from xwch.http import JsonApi
from xwch.protocol.client import (
    AttemptLog,
    DashboardLogin,
    JobCreated,
    JobList,
    JobSummary,
    ResultFile,
    ResultList,
    TaskInfo,
    TaskList,
    WorkerInfo,
    WorkerList,
)
from xwch.protocol.cluster import CoordinatorInfo, CoordinatorList
from xwch.protocol.objects import (
    DownloadsAnswer,
    DownloadsRequest,
    ObjectRef,
    ObjectSources,
    UploadPlan,
    UploadsRequest,
)
from xwch.protocol.wire import API_PREFIX


def _segment(value: str) -> str:
    # Ids travel in the path: quote everything, "/" included, so no id can reach another route.
    return quote(value, safe="")


class CoordinatorClient:
    """The client routes of one coordinator, called with one token."""

    def __init__(self, api: JsonApi) -> None:
        self.api = api

    @property
    def url(self) -> str:
        return self.api.base_url

    async def submit_job(self, wire: Mapping[str, Any]) -> str:
        """Create a job from its wire form; its id."""
        return (await self.api.post_as(f"{API_PREFIX}/jobs", JobCreated, dict(wire))).id

    async def job(self, job_id: str, wait: float = 0.0) -> JobSummary:
        """The job now; with ``wait``, once it has ended or ``wait`` seconds have passed
        (a coordinator that cannot wait answers at once)."""
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}"
        if wait > 0:
            path += f"?wait={wait:g}"
        return await self.api.get_as(path, JobSummary)

    async def jobs(self) -> list[JobSummary]:
        """Every job the token may see, newest first."""
        return list((await self.api.get_as(f"{API_PREFIX}/jobs", JobList)).jobs)

    async def tasks(self, job_id: str) -> list[TaskInfo]:
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}/tasks"
        return list((await self.api.get_as(path, TaskList)).tasks)

    async def logs(self, job_id: str, task: str, attempt: int | None = None) -> AttemptLog:
        """The kept output of one attempt of a task; by default its last attempt."""
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}/tasks/{_segment(task)}/logs"
        if attempt is not None:
            path += f"?attempt={attempt}"
        return await self.api.get_as(path, AttemptLog)

    async def cancel(self, job_id: str) -> JobSummary:
        return await self.api.post_as(f"{API_PREFIX}/jobs/{_segment(job_id)}/cancel", JobSummary)

    async def retry(self, job_id: str) -> JobSummary:
        """Run again the failed and cancelled tasks of an ended job, keeping what is done."""
        return await self.api.post_as(f"{API_PREFIX}/jobs/{_segment(job_id)}/retry", JobSummary)

    async def results(self, job_id: str) -> list[ResultFile]:
        """The job's results that exist (some may be missing when the job failed)."""
        path = f"{API_PREFIX}/jobs/{_segment(job_id)}/results"
        return list((await self.api.get_as(path, ResultList)).results)

    async def workers(self) -> list[WorkerInfo]:
        return list((await self.api.get_as(f"{API_PREFIX}/workers", WorkerList)).workers)

    async def coordinators(self) -> list[CoordinatorInfo]:
        """The coordinators sharing the store, live ones first."""
        path = f"{API_PREFIX}/coordinators"
        return list((await self.api.get_as(path, CoordinatorList)).coordinators)

    async def dashboard_login(self) -> DashboardLogin:
        """A one-time login link of the coordinator's dashboard."""
        return await self.api.post_as(f"{API_PREFIX}/dashboard/logins", DashboardLogin)

    async def uploads(self, objects: Iterable[ObjectRef], site: str | None = None) -> UploadPlan:
        """Which of ``objects`` some warehouse lacks, and where (at ``site``) to upload them."""
        body = UploadsRequest(objects=tuple(objects), site=site)
        return await self.api.post_as(f"{API_PREFIX}/objects/uploads", UploadPlan, body)

    async def downloads(self, digests: Iterable[str]) -> dict[str, ObjectSources]:
        """Digest -> where to read it, for each of ``digests``."""
        body = DownloadsRequest(digests=tuple(digests))
        answer = await self.api.post_as(f"{API_PREFIX}/objects/downloads", DownloadsAnswer, body)
        return {o.digest: o for o in answer.objects}
