"""Everything under ``/api`` on a member of several: served here, or sent where it belongs.

A request about a worker (``/workers/{id}/...``) belongs to the holder of the worker's group,
one about a job (``/jobs/{id}...``) to the holder of the job's group. A new job and a Register
Request are placed in a group first (:func:`place`): here when that group is held here, else
sent to its holder with the group named in the query (``?group=``), which it honours when it
still holds it. Everything else (objects, warehouses, lists, tokens) any serving member
answers from the store. A request sent elsewhere gets a ``307 Temporary Redirect`` to the same
path there, which keeps the method and the body; every part follows it and talks to that
member from then on.

The common case costs nothing: a worker or job this member's managers know is served at once,
without reading the store.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.coordinator.serving import NoneServing, Serving
from xwch.coordinator.web import write_json
from xwch.http import UNREACHABLE_HEADER
from xwch.protocol.cluster import GROUP
from xwch.protocol.wire import API_PREFIX
from xwch.store import placement
from xwch.store.database import Database
from xwch.store.group_locks import GroupLock
from xwch.store.placement import GroupLoads


class About(enum.Enum):
    WORKER = "worker"
    JOB = "job"
    NEW_WORKER = "new worker"
    NEW_JOB = "new job"
    ANY = "any"


_WORKER_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/workers/([^/]+)(/.*)?$")
_JOB_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/jobs/([^/]+)(/.*)?$")


def about(method: bytes, path: bytes) -> tuple[About, str | None]:
    """What a request is about, and which worker or job."""
    text = path.decode("utf-8", "replace").rstrip("/")
    if method == b"POST" and text == f"{API_PREFIX}/workers":
        return About.NEW_WORKER, None
    if method == b"POST" and text == f"{API_PREFIX}/jobs":
        return About.NEW_JOB, None
    match = _WORKER_PATH.match(text)
    if match is not None:
        return About.WORKER, match.group(1)
    match = _JOB_PATH.match(text)
    if match is not None:
        return About.JOB, match.group(1)
    return About.ANY, None


def place(
    kind: About, loads: GroupLoads, locks: Sequence[GroupLock], here: Sequence[str]
) -> str | None:
    """The group a new worker or job goes to, among those with a live holder (``locks`` read
    as the database's clock has them): a worker to the group with the fewest live workers; a
    job to the group running the fewest jobs, where the most slots are among those (workers
    follow the work: ``lending.py``). Ties go to a group held here, then by name."""
    candidates = [lock.id for lock in locks if lock.held]
    if not candidates:
        return None

    def local_first(group: str) -> tuple[bool, str]:
        return group not in here, group

    if kind is About.NEW_WORKER:
        return min(candidates, key=lambda g: (loads.of(g).workers, *local_first(g)))
    return min(
        candidates,
        key=lambda g: (
            loads.of(g).jobs,
            loads.of(g).slots == 0,
            -loads.of(g).slots,
            *local_first(g),
        ),
    )


class Routing(Resource):
    """Serves a request with this member's managers, or sends it to the member it belongs to."""

    isLeaf = True
    log = Logger()

    # Placements read the groups' loads from the store at most this often, and count what
    # they placed since: Register Requests come in bursts (a fleet starting), and each one
    # reading the same counts would put the whole burst in one group.
    LOADS_FOR = 1.0

    def __init__(
        self,
        reactor: IReactorTime,
        serving: Serving,
        db: Database,
        patience: Callable[[], float],
    ) -> None:
        super().__init__()
        self._serving = serving
        self._db = db
        self._patience = patience
        self._reactor = reactor
        self._loads: tuple[float, GroupLoads] | None = None

    def render(self, request: Request) -> int:
        kind, key = about(request.method or b"GET", request.path or b"")
        managers = self._serving.managers
        if managers is not None and (
            kind is About.ANY
            or (kind is About.WORKER and key in managers.workers.workers)
            or (kind is About.JOB and key in managers.tasks.jobs)
        ):
            return managers.router.render(request)  # type: ignore[no-any-return]
        d = ensureDeferred(self._route(request, kind, key))
        d.addErrback(
            lambda f: self.log.failure("routing: cannot answer {path}", f, path=request.path)
        )
        return NOT_DONE_YET

    async def _route(self, request: Request, kind: About, key: str | None) -> None:
        raw = request.getHeader(UNREACHABLE_HEADER) or b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        avoid = frozenset(u.strip().rstrip("/") for u in text.split(",") if u.strip())
        try:
            group = await self._group(request, kind, key)
            url = await self._serving.holder_url(group, self._patience(), avoid)
        except NoneServing:
            if not request.finished and request.channel is not None:
                request.setHeader(b"retry-after", b"2")
                write_json(
                    request,
                    503,
                    {
                        "error": "no_coordinator_serving",
                        "message": "no coordinator serves this right now; retry",
                        "retry_after": 2,
                    },
                )
            return
        if request.finished or request.channel is None:
            return  # the caller went away meanwhile
        placing = kind in (About.NEW_WORKER, About.NEW_JOB) and group is not None
        managers = self._serving.managers
        if url is None and managers is not None:
            if placing:
                assert group is not None
                request.args[GROUP.encode()] = [group.encode()]
            elif kind is About.WORKER and key is not None:
                # Moved to a group held here, or registered at another member: known now.
                await managers.workers.adopt(key)
            managers.router.render(request)
            return
        assert url is not None  # holder_url answers None only when this member serves
        uri = request.uri or b"/"
        if placing:
            assert group is not None
            uri = _with_group(uri, group)
        request.setHeader(b"location", url.rstrip("/").encode("utf-8") + uri)
        write_json(
            request,
            307,
            {
                "error": "elsewhere",
                "message": f"this is served by the coordinator at {url}",
                "url": url,
            },
        )

    async def _group(self, request: Request, kind: About, key: str | None) -> str | None:
        """The group the request belongs to; None: any serving member's."""
        if kind is About.WORKER and key is not None:
            worker_group: str | None = await self._db.read(placement.worker_group_thd, key)
            return worker_group
        if kind is About.JOB and key is not None:
            job_group: str | None = await self._db.read(placement.job_group_thd, key)
            return job_group
        if kind in (About.NEW_WORKER, About.NEW_JOB):
            args: dict[bytes, list[bytes]] = request.args or {}
            asked = (args.get(GROUP.encode()) or [b""])[0].decode("utf-8", "replace")
            if asked and self._serving.serves(asked):
                return asked
            locks = await self._serving.locks()
            loads = await self._recent_loads()
            here = self._serving.fences.groups if self._serving.fences is not None else ()
            if asked:
                # Sent here for a group this member no longer holds: placed among its own, so
                # that a request is sent on once at most.
                mine = [lock for lock in locks if lock.id in here]
                placed = place(kind, loads, mine, here) or place(kind, loads, locks, here)
            else:
                placed = place(kind, loads, locks, here)
            if placed is not None:
                load = loads.of(placed)
                if kind is About.NEW_WORKER:
                    load.workers += 1
                else:
                    load.jobs += 1
            return placed
        return None

    async def _recent_loads(self) -> GroupLoads:
        now = self._reactor.seconds()
        if self._loads is None or now - self._loads[0] >= self.LOADS_FOR:
            loads = await self._db.read(placement.group_loads_thd)
            self._loads = (self._reactor.seconds(), loads)
        return self._loads[1]


def _with_group(uri: bytes, group: str) -> bytes:
    path, _, query = uri.partition(b"?")
    kept = [p for p in query.split(b"&") if p and not p.startswith(GROUP.encode() + b"=")]
    return path + b"?" + b"&".join([*kept, GROUP.encode() + b"=" + group.encode()])
